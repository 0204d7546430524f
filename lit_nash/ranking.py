"""Rankings with their uncertainty: groups of runs by the mean over their seeds (``compare``, the sweep's
summary), and policies by a Bradley–Terry fit of their head-to-head win rates (``eval``).

Over seeds: the mean with a 95% Student-t interval, mean ± t_{0.975, n−1}·s/√n. One seed has no interval: it
is shown with its count ("0.012 (1 seed)"), never as "± 0". The best group is the best mean; a group whose
interval overlaps the best one's is marked as not distinguishable from it.

Head to head: the Bradley–Terry model says P(i ≻ j) = σ(s_i − s_j). Each pair of policies gives an estimate
p̂_ij with its 95% half-width (``lit_nash.evaluation.WinRate``: the pairs' own spread, so soft labels count
as what they are); the scores are the weighted least-squares fit of logit p̂_ij = s_i − s_j, each pair
weighted by the inverse variance of its logit (delta method), with Σ s = 0. Their covariance is the inverse
of the weighted Laplacian (a pseudo-inverse: the scores are defined up to a constant), and each score's 95%
interval is ± 1.96 standard errors. An estimate of 0 or 1 is moved in by half a pair (p̂ ∈ [1/(2n), 1 − 1/(2n)])
and a standard error is at least half a pair's share, 1/(2n), so that no pair gets infinite weight. The Elo
rating is the same score on the chess scale, 1000 + 400·log10(e)·s: 400 Elo points is a win rate of 10/11."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

Z95 = 1.959964
ELO_BASE, ELO_SCALE = 1000.0, 400.0 / math.log(10.0)


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` seeds and the half-width of its 95% interval (None for one seed)."""

    mean: float
    half: float | None
    n: int

    @classmethod
    def over_seeds(cls, values: list[float]) -> "Estimate":
        n = len(values)
        if n == 0:
            raise ValueError("an estimate needs at least one value")
        mean = statistics.fmean(values)
        if n == 1:
            return cls(mean, None, 1)
        from scipy.stats import t

        return cls(mean, float(t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n), n)

    @property
    def low(self) -> float:
        return self.mean - (self.half or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half or 0.0)

    def text(self, digits: int = 4) -> str:
        """``0.0123 ± 0.0041 (3 seeds)``; one seed: ``0.0123 (1 seed)``."""
        seeds = f"({self.n} seed{'s' if self.n != 1 else ''})"
        if self.half is None:
            return f"{self.mean:.{digits}g} {seeds}"
        return f"{self.mean:.{digits}g} ± {self.half:.2g} {seeds}"

    def overlaps(self, other: "Estimate") -> bool:
        """Whether the two intervals overlap (a single seed's interval is its value)."""
        return self.low <= other.high and other.low <= self.high


def rank(estimates: dict[str, Estimate], higher_is_better: bool = False) -> list[dict]:
    """The groups best first: ``{"rank", "group", "estimate", "with_best"}``; ``with_best`` is True for every
    group whose interval overlaps the best group's (the data do not tell them apart)."""
    order = sorted(estimates, key=lambda g: -estimates[g].mean if higher_is_better else estimates[g].mean)
    if not order:
        return []
    best = estimates[order[0]]
    return [{"rank": i + 1, "group": g, "estimate": estimates[g],
             "with_best": i == 0 or estimates[g].mean == best.mean
             or (estimates[g].overlaps(best) and (best.n > 1 or estimates[g].n > 1))}
            for i, g in enumerate(order)]


@dataclass(frozen=True)
class Scores:
    """Bradley–Terry scores (Σ = 0) with their 95% half-widths, and the same on the Elo scale."""

    names: list[str]
    scores: list[float]
    half: list[float | None]

    @property
    def elo(self) -> list[float]:
        return [ELO_BASE + ELO_SCALE * s for s in self.scores]

    @property
    def elo_half(self) -> list[float | None]:
        return [None if h is None else ELO_SCALE * h for h in self.half]

    def order(self) -> list[int]:
        """Indices best first."""
        return sorted(range(len(self.names)), key=lambda i: -self.scores[i])


def bradley_terry(names: list[str], win_rate, ci95=None, pairs: int | None = None) -> Scores:
    """Scores from a matrix of P(row ≻ column). With ``ci95`` (the half-widths, same shape) and ``pairs`` (the
    pairs each entry rests on): the weighted fit of the module docstring, with intervals. Without: an exact
    matrix (a game's), fitted unweighted, without intervals."""
    import numpy as np

    P = np.asarray(win_rate, dtype=float)
    k = len(names)
    if P.shape != (k, k):
        raise ValueError(f"bradley_terry: a {k}×{k} matrix for {k} policies, got shape {P.shape}")
    if k == 1:
        return Scores(list(names), [0.0], [None])
    L, b = np.zeros((k, k)), np.zeros(k)
    for i in range(k):
        for j in range(i + 1, k):
            p = P[i, j]
            if ci95 is None:
                p, weight = min(max(p, 1e-9), 1 - 1e-9), 1.0
            else:
                n = max(int(pairs or 1), 1)
                p = min(max(p, 0.5 / n), 1 - 0.5 / n)
                se = max(float(np.asarray(ci95)[i, j]) / Z95, 0.5 / n)
                weight = (p * (1 - p) / se) ** 2  # 1 / var(logit p̂), by the delta method
            y = math.log(p / (1 - p))
            L[i, i] += weight
            L[j, j] += weight
            L[i, j] -= weight
            L[j, i] -= weight
            b[i] += weight * y
            b[j] -= weight * y
    cov = np.linalg.pinv(L)
    s = cov @ b
    s -= s.mean()
    half = [Z95 * math.sqrt(max(cov[i, i], 0.0)) for i in range(k)] if ci95 is not None else [None] * k
    return Scores(list(names), [float(v) for v in s], half)
