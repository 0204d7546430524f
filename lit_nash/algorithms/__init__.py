"""One file per NLHF algorithm; each is a small ``Algorithm`` (a Lightning Callback)."""

from lit_nash.algorithms.base import Algorithm
from lit_nash.algorithms.comal import COMAL
from lit_nash.algorithms.egpo import EGPO
from lit_nash.algorithms.inpo import INPO
from lit_nash.algorithms.mmd import MMD
from lit_nash.algorithms.mnpo import MNPO
from lit_nash.algorithms.mpo import MPO
from lit_nash.algorithms.nash_md import NashMD
from lit_nash.algorithms.nash_mp import NashMP
from lit_nash.algorithms.online_ipo import OnlineIPO
from lit_nash.algorithms.sppo import SPPO

ALGORITHMS = {a.name: a for a in (SPPO, OnlineIPO, INPO, NashMD, MMD, MPO, COMAL, EGPO, NashMP, MNPO)}

__all__ = ["ALGORITHMS", "Algorithm", *[a.__name__ for a in ALGORITHMS.values()]]
