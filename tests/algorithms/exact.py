"""Measurements on simulated trajectories: gaps, KL curves, fitted contraction rates."""

import torch

from lit_nash.games import duality_gap, kl, regularized_duality_gap

UNIFORM3 = torch.full((1, 3), 1 / 3, dtype=torch.float64)


def gaps(P, sim):
    """Original duality gap at every recorded step, worst game: (records,)."""
    return duality_gap(P, sim.trajectory.exp()).amax(-1)


def reg_gaps(P, sim, tau, mu=UNIFORM3):
    return regularized_duality_gap(P, sim.trajectory.exp(), mu, tau).amax(-1)


def contraction(steps, values, lo=1e-11, hi=1e-3):
    """Per-step contraction factor of a linearly converging sequence: exp of the log-linear slope, fitted
    on the window lo < value < hi (past the transient, above float64 round-off)."""
    mask = (values > lo) & (values < hi)
    assert mask.sum() >= 5, f"too few points in ({lo}, {hi}) to fit a rate: {values}"
    x, y = steps[mask].double(), values[mask].log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return slope.exp().item()


def kl_curve(star, sim):
    """KL(π*_τ ‖ π_t) at the recorded steps, worst game."""
    return kl(star, sim.trajectory.exp()).amax(-1)


def flat_grad(loss, params):
    """∇ loss over ``params``, flattened into one vector (the graph is kept for the next one)."""
    return torch.cat([x.flatten() for x in torch.autograd.grad(loss, params, retain_graph=True)])


def on_policy(logp, pi):
    """``logp`` (N, m) with the value ℓ and the gradient m·π(y)·∇ℓ: w·ℓ + (1 − w)·sg(ℓ), w = m·π(y). A loss that
    averages over the m enumerated responses then has the gradient of Σ_y π(y)·(...): its exact expectation
    under π, so ``policy_gradient``'s expected gradient is computed through the loss itself."""
    w = pi.detach() * logp.shape[1]
    return w * logp + (1 - w) * logp.detach()
