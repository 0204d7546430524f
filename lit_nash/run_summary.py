"""The scalar results a run logs at its end, so that the MLflow runs table can sort by them and a reader sees
which runs converged (names: ``lit_nash.glossary``, all under ``summary/``).

They are computed from what the run logged (its MLflow metric histories), at step s meaning "after s + 1
optimizer steps" as on every curve:

* on a game: the last iterate's duality gap, original and regularized, at the end (``summary/gap``,
  ``summary/reg_gap``) and averaged over the last window of the run (``summary/gap_window``,
  ``summary/reg_gap_window``; the window is the last ``summary.window_fraction`` of the steps, the last sixth
  by default); the average iterate's gaps at the end (``summary/avg_gap``, ``summary/avg_reg_gap``, when the
  run logs ``game/avg_*``); the duality gap of π*_τ(μ), the level where a method that solves the regularized
  game stops (``summary/reg_ne_gap``);
* the tag ``converged``: ``true`` when the last iterate reached the algorithm's own target (its tag
  ``target``): for an NE method, the window mean of the original gap is at most ε (``summary.epsilon``); for a
  π*_τ method, that of the regularized gap is at most ``summary.reg_epsilon``. A π*_τ method is never
  "converged to the NE" because π*_τ happens to lie within ε of it (the 3-cycle's π*_τ has gap 0.0245 < 0.03).
  ``converged_to`` says which (``NE``, ``regularized NE``, ``none``); a run without a target tag is judged on
  both, the NE first;
* ``summary/steps_to_eps``: the optimizer steps until the target's gap stays at or below its ε to the end, and ``summary/queries_to_eps`` and ``summary/seconds_to_eps`` at that step
  (preference queries: runs that log ``pref/queries``; seconds since the first logged step);
  ``summary/avg_steps_to_eps`` the same for the average iterate's original gap;
* without a game: the final and window-mean training loss and the latest ``eval/win_rate_vs_ref``;
* always: ``summary/wall_time_s`` (the time in ``trainer.fit``) and ``summary/steps`` (optimizer steps done).

The run's description (the MLflow note the run page shows) says what ran and whether it converged. A run
stopped before its ``trainer.max_steps`` (a signal) logs none of these, only its description; a resume that
finishes it logs them then."""

from __future__ import annotations

from lit_nash import glossary as g

DEFAULT_EPSILON = 0.03  # issue 22's last-iterate target for MPO and COMAL on the 3-cycle
DEFAULT_REG_EPSILON = 1e-3  # the benchmark's on the 3-cycle: the uniform start's regularized gap is 7.3e-3
DEFAULT_WINDOW = 1 / 6  # issue 22 averages the last sixth of a run
NOTE = "mlflow.note.content"  # the run's (or experiment's) description in the MLflow UI


def settings(cfg) -> tuple[float, float, float]:
    """(ε, regularized ε, window fraction) from the run's ``summary`` node, checked: one line naming the key if
    wrong."""
    from lit_nash.validate import in_unit_interval, positive

    node = cfg.get("summary") or {}
    epsilon = positive("summary.epsilon", node.get("epsilon", DEFAULT_EPSILON))
    reg_epsilon = positive("summary.reg_epsilon", node.get("reg_epsilon", DEFAULT_REG_EPSILON))
    window = in_unit_interval("summary.window_fraction", node.get("window_fraction", DEFAULT_WINDOW), open_left=True)
    return epsilon, reg_epsilon, window


def window_mean(points: list[tuple], fraction: float) -> float:
    """The mean of the values logged in the last ``fraction`` of the run's steps (at least the last point)."""
    last = points[-1][0]
    start = (1.0 - fraction) * (last + 1)
    values = [p[1] for p in points if p[0] >= start] or [points[-1][1]]
    return sum(values) / len(values)


def stays_below(points: list[tuple], epsilon: float):
    """The first logged point from which every value is at most ε to the end; None if the last is above."""
    found = None
    for point in reversed(points):
        if point[1] > epsilon:
            break
        found = point
    return found


def crossing(points: list[tuple], epsilon: float, queries: list[tuple] | None = None) -> dict[str, float] | None:
    """What it cost until a gap's history (step, value, timestamp ms) first stays at most ε to the end: the
    optimizer ``steps`` (a point at step s is logged after s + 1 of them), the preference ``queries`` by then
    (interpolated in ``queries``' history, where given and covering that step) and the ``seconds`` since the
    gap's first logged point. None if its last value is above ε."""
    reached = stays_below(points, epsilon)
    if reached is None:
        return None
    out = {"steps": reached[0] + 1, "seconds": (reached[2] - points[0][2]) / 1000.0}
    asked = value_at(queries or [], reached[0])
    if asked is not None:
        out["queries"] = asked
    return out


def value_at(points: list[tuple], step: int) -> float | None:
    """A metric's value at ``step``, linear between its logged steps; None outside them."""
    import numpy as np

    if not points or not points[0][0] <= step <= points[-1][0]:
        return None
    return float(np.interp(step, [p[0] for p in points], [p[1] for p in points]))


def verdict(metrics: dict[str, float], target: str | None, epsilon: float, reg_epsilon: float) -> str:
    """Where the last iterate converged: ``NE``, ``regularized NE`` or ``none``, judged on the target's own gap."""
    at_ne = metrics[g.GAP_WINDOW] <= epsilon
    at_reg = g.REG_GAP_WINDOW in metrics and metrics[g.REG_GAP_WINDOW] <= reg_epsilon
    if target == "NE":
        return "NE" if at_ne else "none"
    if target == "regularized NE":
        return "regularized NE" if at_reg else "none"
    return "NE" if at_ne else "regularized NE" if at_reg else "none"


def summarize(history: dict[str, list[tuple]], epsilon: float, window: float, seconds: float, steps: int,
              complete: bool, reg_ne_gap: float | None = None, target: str | None = None,
              reg_epsilon: float = DEFAULT_REG_EPSILON) -> tuple[dict[str, float], dict[str, str]]:
    """The summary metrics and tags of a run from its histories (``{metric: [(step, value, timestamp ms)]}``,
    sorted by step); ``target`` is the algorithm's (``NE`` or ``regularized NE``), None to judge on both."""
    metrics: dict[str, float] = {g.WALL_TIME: seconds, g.STEPS: steps}
    tags: dict[str, str] = {}
    gap, reg = history.get("game/duality_gap"), history.get("game/reg_duality_gap")
    if gap:
        metrics[g.GAP], metrics[g.GAP_WINDOW] = gap[-1][1], window_mean(gap, window)
        if reg:
            metrics[g.REG_GAP], metrics[g.REG_GAP_WINDOW] = reg[-1][1], window_mean(reg, window)
        for key, name in (("game/avg_duality_gap", g.AVG_GAP), ("game/avg_reg_duality_gap", g.AVG_REG_GAP)):
            if history.get(key):
                metrics[name] = history[key][-1][1]
        if reg_ne_gap is not None:
            metrics[g.REG_NE_GAP] = reg_ne_gap
        to = verdict(metrics, target, epsilon, reg_epsilon)
        if complete:
            tags.update(converged=str(to != "none").lower(), converged_to=to)
        judged = target or ("regularized NE" if to == "regularized NE" else "NE")  # the gap of the verdict's target
        on_reg = reg and judged == "regularized NE"
        reached = crossing(reg, reg_epsilon, history.get("pref/queries")) if on_reg else crossing(
            gap, epsilon, history.get("pref/queries"))
        if reached is not None:
            metrics[g.STEPS_TO_EPS], metrics[g.SECONDS_TO_EPS] = reached["steps"], reached["seconds"]
            if "queries" in reached:
                metrics[g.QUERIES_TO_EPS] = reached["queries"]
        average = crossing(history.get("game/avg_duality_gap") or [], epsilon)
        if average is not None:
            metrics[g.AVG_STEPS_TO_EPS] = average["steps"]
    elif history.get("train/loss"):
        loss = history["train/loss"]
        metrics[g.LOSS], metrics[g.LOSS_WINDOW] = loss[-1][1], window_mean(loss, window)
    if history.get("eval/win_rate_vs_ref"):
        metrics[g.WIN_RATE] = history["eval/win_rate_vs_ref"][-1][1]
    return metrics, tags


def reg_ne_gap(P, log_mu, tau: float) -> float:
    """The duality gap (original game) of π*_τ(μ), the regularized game's equilibrium, averaged over prompts."""
    import torch

    from lit_nash.games import duality_gap, regularized_nash

    P64 = P.detach().double().cpu()
    pi = regularized_nash(P64, log_mu.detach().double().cpu().exp(), float(tau))
    return float(duality_gap(P64, torch.as_tensor(pi)).mean())


def describe(tags: dict[str, str], cfg, metrics: dict[str, float], epsilon: float, window: float,
             reg_epsilon: float = DEFAULT_REG_EPSILON) -> str:
    """The run's description: what ran and what came of it."""
    what = tags.get("game") or tags.get("data")
    text = (f"{tags.get('algo')} on {what} ({cfg.rollout.mode} play), seed {cfg.seed}, "
            f"{int(metrics[g.STEPS])} of {cfg.trainer.max_steps} optimizer steps in {metrics[g.WALL_TIME]:.1f} s.")
    if tags.get("sweep"):
        text += f" Job {tags.get('sweep_job')} of sweep {tags['sweep']}."
    if g.GAP in metrics:
        last = f"the last {window:.0%} of the steps"
        if tags.get("converged_to") in ("NE", "regularized NE"):
            ne = tags["converged_to"] == "NE"
            key, game, eps = (g.GAP_WINDOW, "original", epsilon) if ne else (g.REG_GAP_WINDOW, "regularized", reg_epsilon)
            text += (f"\n\nConverged to the {tags['converged_to']}: the last iterate's duality gap ({game} game) "
                     f"averaged {metrics[key]:.3g} over {last}, at most ε = {eps:g}.")
        elif tags.get("converged") == "false":
            aim = f" (its target: the {tags['target']})" if tags.get("target") else ""
            text += (f"\n\nDid not converge{aim}: the duality gap averaged {metrics[g.GAP_WINDOW]:.3g} (original game, "
                     f"ε = {epsilon:g}) and {metrics.get(g.REG_GAP_WINDOW, float('nan')):.3g} (regularized, "
                     f"ε = {reg_epsilon:g}) over {last}.")
        if g.AVG_GAP in metrics:
            text += f" The average iterate's duality gap is {metrics[g.AVG_GAP]:.3g}."
    return text


def log_summary(client, run_id: str, cfg, tags: dict[str, str], seconds: float, steps: int, metrics_callback=None,
                network=None) -> dict[str, float]:
    """Log the summary metrics, the ``converged`` tags and the description of a finished (or stopped) run; the
    game's truth and the reference come from fit's ``GameMetrics`` callback and the policy network."""
    import time

    from mlflow.entities import Metric, RunTag

    from lit_nash.tracking import metric_history

    epsilon, reg_epsilon, window = settings(cfg)
    keys = ["game/duality_gap", "game/reg_duality_gap", "game/avg_duality_gap", "game/avg_reg_duality_gap",
            "pref/queries", "train/loss", "eval/win_rate_vs_ref"]
    history = {k: metric_history(client, run_id, k, with_time=True) for k in keys}
    reference = None
    if metrics_callback is not None and network is not None:
        reference = reg_ne_gap(metrics_callback.P, network.snapshot("ref"), metrics_callback.tau)
    complete = steps >= int(cfg.trainer.max_steps)
    metrics, new_tags = summarize(history, epsilon, window, seconds, steps, complete, reference, tags.get("target"),
                                  reg_epsilon)
    new_tags[NOTE] = describe({**tags, **new_tags}, cfg, metrics, epsilon, window, reg_epsilon)
    if not complete:  # stopped early: its description says so; the results come when a resume finishes it
        client.set_tag(run_id, NOTE, new_tags[NOTE] + " Stopped before its last step: no summary yet.")
        return {}
    now, step = int(time.time() * 1000), max(steps - 1, 0)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in new_tags.items()])
    return metrics


def summary_keys() -> list[str]:
    """Every summary metric, in the order a table shows them."""
    return [g.GAP_WINDOW, g.GAP, g.REG_GAP_WINDOW, g.REG_GAP, g.AVG_GAP, g.AVG_REG_GAP, g.STEPS_TO_EPS,
            g.QUERIES_TO_EPS, g.SECONDS_TO_EPS, g.AVG_STEPS_TO_EPS, g.REG_NE_GAP, g.LOSS_WINDOW, g.LOSS,
            g.WIN_RATE, g.WALL_TIME, g.STEPS]
