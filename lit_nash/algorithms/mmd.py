"""MMD, magnetic mirror descent (Sokota et al. 2023) with the reference as a fixed magnet.

Exact form: the prox step l' = (l + ητ·log μ + η·P·π_t)/(1+ητ). Linear last-iterate convergence to
π*_τ for small enough η; the base that MPO adds magnet updates to (ALGORITHMS.md §2.6).

Practical loss: MPO's policy gradient with the reference as the magnet (``lit_nash.algorithms.mpo``).
"""

from lit_nash.algorithms.mpo import MPO


class MMD(MPO):
    name = "mmd"
    magnet = "ref"
    converges_to = "regularized NE"  # the magnet is the fixed reference

    def __init__(self, eta: float = 1.0, tau: float = 0.1, k: int = 2, variant: str = "mpo",
                 logprob_reduction: str = "sum"):
        super().__init__(eta, tau, magnet_every=None, k=k, variant=variant, logprob_reduction=logprob_reduction)

    def prepare(self, policy):
        pass
