"""One glossary of metric names: what each MLflow key means in words, for every figure's axis and every
table's header, and which way is better. The names the runs log stay short keys (``game/duality_gap``); a
reader of a figure gets "duality gap (original game)" against "optimizer step". A key the glossary does not
know is shown as it is.

The summary metrics a run logs at its end (``lit_nash.run_summary``) are named here too, under ``summary/``,
so that the runs table's column and sort menus list them together."""

from __future__ import annotations

LABELS = {
    # the policy now: its last iterate
    "game/duality_gap": "duality gap (original game)",
    "game/reg_duality_gap": "duality gap (regularized game)",
    "game/exploitability": "exploitability (original game)",
    "game/kl_to_ne": "KL(π* ‖ π) to the NE",
    "game/invalid_mass": "invalid-response mass",
    # the uniform average of the iterates so far
    "game/avg_duality_gap": "duality gap of the average iterate (original game)",
    "game/avg_reg_duality_gap": "duality gap of the average iterate (regularized game)",
    "game/avg_exploitability": "exploitability of the average iterate",
    "game/avg_kl_to_ne": "KL(π* ‖ π̄) of the average iterate to the NE",
    "train/loss": "training loss",
    "train/generator_logprob_gap": "|log π_generator − log π| of the sampled responses",
    "eval/win_rate_vs_ref": "win rate against the reference",
    "eval/win_rate_vs_snapshot": "win rate against the previous evaluation's policy",
    "eval/exact_win_rate_vs_ref": "exact win rate against the reference",
    "eval/loss": "evaluation loss",
    "eval/accuracy": "evaluation accuracy",
    # cumulative costs, logged every step
    "pref/queries": "preference queries",
    "gen/tokens": "generated tokens",
}

# x-axes of compare's curves that are not metrics
AXES = {"step": "optimizer step", "time": "wall time since the first logged step (s)"}

# -- the summary metrics a run logs at its end (lit_nash.run_summary) -----------------------------------------
GAP = "summary/gap"  # the last iterate's duality gap (original game) at the end
GAP_WINDOW = "summary/gap_window"  # its mean over the last window of the run
REG_GAP = "summary/reg_gap"
REG_GAP_WINDOW = "summary/reg_gap_window"
AVG_GAP = "summary/avg_gap"  # the average iterate's duality gap at the end
AVG_REG_GAP = "summary/avg_reg_gap"
STEPS_TO_EPS = "summary/steps_to_eps"  # optimizer steps until the converged-to gap stays at or below ε
QUERIES_TO_EPS = "summary/queries_to_eps"  # preference queries by then (runs that log pref/queries)
SECONDS_TO_EPS = "summary/seconds_to_eps"
AVG_STEPS_TO_EPS = "summary/avg_steps_to_eps"  # the same for the average iterate's duality gap
REG_NE_GAP = "summary/reg_ne_gap"  # the duality gap of π*_τ(μ): where a regularized method stops
LOSS = "summary/loss"
LOSS_WINDOW = "summary/loss_window"
WIN_RATE = "summary/win_rate_vs_ref"
WALL_TIME = "summary/wall_time_s"
STEPS = "summary/steps"

LABELS.update({
    GAP: "final duality gap (original game)",
    GAP_WINDOW: "duality gap (original game), mean over the last window",
    REG_GAP: "final duality gap (regularized game)",
    REG_GAP_WINDOW: "duality gap (regularized game), mean over the last window",
    AVG_GAP: "final duality gap of the average iterate (original game)",
    AVG_REG_GAP: "final duality gap of the average iterate (regularized game)",
    STEPS_TO_EPS: "optimizer steps to reach ε",
    QUERIES_TO_EPS: "preference queries to reach ε",
    SECONDS_TO_EPS: "seconds to reach ε",
    AVG_STEPS_TO_EPS: "optimizer steps for the average iterate to reach ε",
    REG_NE_GAP: "duality gap of π*_τ (original game)",
    LOSS: "final training loss",
    LOSS_WINDOW: "training loss, mean over the last window",
    WIN_RATE: "final win rate against the reference",
    WALL_TIME: "training time (s)",
    STEPS: "optimizer steps done",
})

HIGHER_IS_BETTER = ("win_rate", "accuracy", "elo")  # any other metric: lower is better (gaps, KLs, losses, costs)


def label(key: str) -> str:
    """The words for a metric key or an x-axis (``step``, ``time``); the key itself if unknown."""
    return LABELS.get(key) or AXES.get(key) or key


def higher_is_better(key: str) -> bool:
    return any(word in key.rsplit("/", 1)[-1] for word in HIGHER_IS_BETTER)


def is_gap(key: str) -> bool:
    """A gap, exploitability or KL: non-negative, 0 at its target, drawn on a log axis."""
    last = key.rsplit("/", 1)[-1]
    return any(word in last for word in ("gap", "exploitability", "kl"))


def measures_the_machine(key: str) -> bool:
    """MLflow's system metrics and the timings: they differ between two runs of the same settings."""
    return key.startswith("system/") or key in (WALL_TIME, SECONDS_TO_EPS)
