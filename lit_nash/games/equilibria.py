"""Exact solutions and gaps of matrix preference games (ALGORITHMS.md §3): the ground truth for evaluation.

Every function works in float64, is batched over leading dimensions (P of shape (..., K, K), policies of
shape (..., K), broadcast against each other) and returns the kind it was given: numpy in, numpy out;
torch in, torch out on the input's device. Every function that takes P first checks it with
``validate_preference_matrix`` (entries in [0, 1], P + Pᵀ = 1, within 1e-6) and raises its ValueError,
as ``MatrixGame`` does: a malformed P would otherwise give a plausible-looking but meaningless answer.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from lit_nash.games import dynamics
from lit_nash.games.matrix import validate_preference_matrix  # matrix.py imports nothing from here


def _to_torch(*xs, P=None):
    """Convert inputs to float64 tensors on one device; remember whether to hand back numpy.

    With ``P`` given, it is validated (once) and comes first in the returned list.
    """
    if P is not None:
        device = next((x.device for x in (P, *xs) if isinstance(x, Tensor)), None)
        xs = (validate_preference_matrix(P), *xs)  # a float64 tensor, on P's device if P was one
    else:
        device = next((x.device for x in xs if isinstance(x, Tensor)), None)
    as_numpy = device is None
    out = []
    for x in xs:
        if isinstance(x, Tensor):
            out.append(x.detach().to(device=device, dtype=torch.float64))
        else:
            out.append(torch.as_tensor(np.asarray(x, dtype=np.float64), device=device))
    return as_numpy, out


def _back(as_numpy: bool, t: Tensor):
    """numpy (a numpy scalar for 0-d results) if the inputs were numpy, else the tensor itself."""
    if not as_numpy:
        return t
    a = t.cpu().numpy()
    return a[()] if a.ndim == 0 else a


def _kl(p: Tensor, q: Tensor) -> Tensor:
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(-1)


def _win_rates(P: Tensor, pi: Tensor) -> Tensor:
    return (P @ pi.unsqueeze(-1)).squeeze(-1)


def _reg_gap(P: Tensor, pi: Tensor, mu: Tensor, tau: float) -> Tensor:
    lse = torch.logsumexp(torch.log(mu) + _win_rates(P, pi) / tau, dim=-1)
    return 2 * tau * lse - 1 + 2 * tau * _kl(pi, mu)


def kl(p, q):
    """KL(p ‖ q) over the last dimension, with 0·log 0 = 0 (and +inf where q = 0 < p)."""
    as_numpy, (p, q) = _to_torch(p, q)
    return _back(as_numpy, _kl(p, q))


def _solve_lp(P: np.ndarray) -> np.ndarray:
    """max v s.t. (Pᵀx)_j ≥ v ∀j, Σx = 1, x ≥ 0; variables (x, v)."""
    K = P.shape[-1]
    c = np.zeros(K + 1)
    c[-1] = -1.0
    A_ub = np.hstack([-P.T, np.ones((K, 1))])
    A_eq = np.hstack([np.ones((1, K)), np.zeros((1, 1))])
    bounds = [(0, None)] * K + [(None, None)]
    res = scipy.optimize.linprog(c, A_ub=A_ub, b_ub=np.zeros(K), A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"Nash LP failed: {res.message}")
    x = np.clip(res.x[:K], 0.0, None)
    return x / x.sum()


def nash_equilibrium(P):
    """An exact NE of the symmetric game max_π1 min_π2 π1ᵀPπ2, by LP (scipy HiGHS), one per leading game.

    For P + Pᵀ = 1 the max-player solution is also the min-player one, so it is a symmetric NE. The NE may
    be non-unique; HiGHS returns a vertex of the NE polytope.
    """
    as_numpy, (Pt,) = _to_torch(P=P)
    return _back(as_numpy, _nash(Pt))


def _nash(P: Tensor) -> Tensor:
    """``nash_equilibrium`` of an already validated float64 P, as a tensor on P's device."""
    Pn = P.cpu().numpy()
    flat = Pn.reshape(-1, *Pn.shape[-2:])
    ne = np.stack([_solve_lp(m) for m in flat]).reshape(Pn.shape[:-1])
    return torch.as_tensor(ne, device=P.device)


def duality_gap(P, pi):
    """Original-game duality gap of the symmetric profile (π, π): 2·max_j (Pπ)_j − 1, zero iff π is a NE."""
    as_numpy, (P, pi) = _to_torch(pi, P=P)
    return _back(as_numpy, 2 * _win_rates(P, pi).amax(-1) - 1)


def exploitability(P, pi):
    """How much a best response beats π: max_j P(j ≻ π) − ½ (half the duality gap)."""
    as_numpy, (P, pi) = _to_torch(pi, P=P)
    return _back(as_numpy, _win_rates(P, pi).amax(-1) - 0.5)


def kl_to_nash(P, pi, ne=None):
    """KL(π* ‖ π) to the LP NE π* (or to ``ne`` if given, e.g. when the NE is not unique)."""
    if ne is None:
        as_numpy, (P, pi) = _to_torch(pi, P=P)
        return _back(as_numpy, _kl(_nash(P).to(pi.device), pi))
    validate_preference_matrix(P)  # unused with ``ne`` given, but a malformed P means a wrong ``ne`` too
    as_numpy, (ne, pi) = _to_torch(ne, pi)
    return _back(as_numpy, _kl(ne, pi))


def regularized_duality_gap(P, pi, mu, tau: float):
    """Gap_τ(π; μ) = max_π1 J_τ(π1, π) − min_π2 J_τ(π, π2), closed form via the softmax best responses:

    2τ·log Σ_y μ(y)·exp((Pπ)_y / τ) − 1 + 2τ·KL(π‖μ). Non-negative, and zero iff π = π*_τ(μ).
    """
    _check_tau(tau)
    as_numpy, (P, pi, mu) = _to_torch(pi, mu, P=P)
    return _back(as_numpy, _reg_gap(P, pi, mu, tau))


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")


def regularized_nash(
    P, mu, tau: float, tol: float = 1e-13, max_iter: int = 20_000, residual_tol: float | None = None
):
    """The unique NE π*_τ(μ) = softmax(log μ + Pπ*/τ) of the KL-regularized game, to a stated tolerance.

    Returned once every game has a regularized gap (``regularized_duality_gap``) below ``tol`` *and* a
    fixed-point residual below ``residual_tol``, which is all that is promised, where the residual of π is

        r(π) = max_y |log π(y) − log softmax(log μ + Pπ/τ)(y)|,

    the largest log-ratio between π and its own softmax best response, over the support of μ (off it both
    are 0). So every π(y), however small, is within a factor e^{±r} of the best response's. The gap alone
    is too coarse a stopping rule: it is quadratic in the distance to π*_τ and blind to tiny π(y), so at
    its float64 floor (~1e-16) r was up to 4e-6 at τ = 0.02 and ~400 at τ = 0.001. ``residual_tol``
    defaults to ``residual_tolerance(τ)`` = max(1e-11, 1e-15/τ²): 1e-11 for τ ≥ 0.01, 2.5e-10 at τ = 0.002,
    1e-9 at τ = 0.001. Newton stops as soon as r is below it, so the returned r is anywhere under it (up
    to 9.8e-10 at τ = 0.001 on random 3–24-action games), not at the float64 floor: rounding the scores
    Pπ/τ (~1/τ in size) puts a floor of order ε/τ² under r (reached with a smaller ``residual_tol``:
    ~5e-14 at τ = 0.02, ~2e-11 at τ = 0.001).

    Mirror-prox (Nash-MP) steps converge from anywhere, but only linearly at a rate ~ητ per step; Newton on
    the fixed point converges quadratically, but only within ~τ of it. So: mirror prox until the gap is below
    ``switch`` ∝ τ², then Newton until r < ``residual_tol`` (each step kept only where it lowers r); should
    Newton stall, mirror prox goes on to a smaller ``switch``. ``max_iter`` bounds the mirror-prox steps, and
    each Newton phase takes at most 20 steps; RuntimeError if the tolerances are not reached.
    """
    _check_tau(tau)
    if residual_tol is None:
        residual_tol = residual_tolerance(tau)
    as_numpy, (P, mu) = _to_torch(mu, P=P)
    batch = np.broadcast_shapes(P.shape[:-2], mu.shape[:-1])  # torch's version imports sympy: slow
    K = P.shape[-1]
    P, mu = P.expand(*batch, K, K), mu.expand(*batch, K)
    log_mu = torch.log(mu)

    # η = 1/L, where L = ½ is the Lipschitz constant of π ↦ Pπ from ℓ1 to ℓ∞ (|P − ½| ≤ ½ entrywise).
    op = partial(dynamics.prox, eta=2.0, tau=tau, log_mu=log_mu)
    win_rates_of = partial(dynamics.win_rates, P)
    l, it, check_every = dynamics.normalize(log_mu), 0, 25
    switch = max(tol, min(1e-6, 1e-3 * tau**2))
    while True:
        while it < max_iter and _reg_gap(P, l.exp(), mu, tau).max() >= switch:
            for _ in range(check_every):
                l, _ = dynamics.two_call(op, l, win_rates_of)
            it += check_every
        l, res = _newton(P, mu, log_mu, tau, l, residual_tol)
        gap = _reg_gap(P, l.exp(), mu, tau)
        converged = bool(((gap < tol) & (res < residual_tol)).all())
        if converged or it >= max_iter or switch <= tol:
            break
        switch = max(tol, switch / 100)
    if not converged:
        raise RuntimeError(
            f"regularized_nash did not converge: max remaining gap {gap.max().item():.3e} (tol {tol:g}), "
            f"max fixed-point residual {res.max().item():.3e} (residual_tol {residual_tol:g}) "
            f"after {it} mirror-prox steps (tau={tau:g})"
        )
    return _back(as_numpy, l.exp())


def residual_tolerance(tau: float) -> float:
    """The fixed-point residual ``regularized_nash`` guarantees by default: max(1e-11, 1e-15/τ²), the ε/τ²
    float64 floor of the scores Pπ/τ with a margin."""
    return max(1e-11, 1e-15 / tau**2)


def _residual(P: Tensor, mu: Tensor, log_mu: Tensor, tau: float, l: Tensor) -> tuple[Tensor, Tensor]:
    """r(π) of ``regularized_nash`` for log π = ``l``, and the log best response log softmax(log μ + Pπ/τ)."""
    br = torch.log_softmax(log_mu + _win_rates(P, l.exp()) / tau, dim=-1)
    return torch.where(mu > 0, (l - br).abs(), 0.0).amax(-1), br


def _newton(P: Tensor, mu: Tensor, log_mu: Tensor, tau: float, l: Tensor, residual_tol: float, steps: int = 20):
    """Newton on G(π) = π − softmax(log μ + Pπ/τ), Jacobian I − (diag(s) − ssᵀ)P/τ, batched, from log π = l.

    Each Newton point is mapped once more through the (log-)softmax, which keeps π positive, its small
    entries exact in log space, and the convergence quadratic; a step is kept only for the games whose
    residual r it lowers. Returns the log-policies and their residuals.
    """
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    res, br = _residual(P, mu, log_mu, tau, l)
    for _ in range(steps):
        todo = res >= residual_tol
        if not todo.any():
            break
        pi, s = l.exp(), br.exp()
        J = eye - (torch.diag_embed(s) - s.unsqueeze(-1) * s.unsqueeze(-2)) @ P / tau
        step = torch.linalg.solve(J, (pi - s).unsqueeze(-1)).squeeze(-1)
        new = torch.log_softmax(log_mu + _win_rates(P, pi - step) / tau, dim=-1)
        new_res, new_br = _residual(P, mu, log_mu, tau, new)
        better = todo & (new_res < res)
        if not better.any():
            break
        keep = better.unsqueeze(-1)
        l, br, res = torch.where(keep, new, l), torch.where(keep, new_br, br), torch.where(better, new_res, res)
    return l, res
