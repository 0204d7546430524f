"""The runs of one MLflow experiment, read back and grouped for ``compare``: which runs are seeds of one row,
which are incomplete, and each metric's curve on the chosen x-axis.

A run is *complete* when MLflow has it FINISHED and its last logged step reached its ``trainer.max_steps``
param (a step s is logged after s + 1 optimizer steps, so the last is max_steps − 1; EGPO and Nash-MP round
max_steps up, which only adds steps), and so did its ``summary/steps`` (the steps it did, logged at its end). Every other run (RUNNING, FAILED, KILLED, or FINISHED short of its
length) is *incomplete*: it never enters a mean; ``compare`` lists it apart, with its last step.

Groups: the runs are grouped by ``group_by`` (a tag, ``tags.<name>``, or ``params.<config key>``; several keys
make a label ``egpo tau=0.1 eta=1``), split by task when the experiment holds runs of different games or
datasets, rollout modes or lengths, and within a group each seed (the ``seed`` tag) counts once: a rerun
replaces the earlier run.

x-axes (``x``): ``step`` (the logged step), ``time`` (seconds since the run's first logged point), or any
logged metric, e.g. ``pref/queries``: each point of a curve at step s is placed at that metric's value at step
s (linear between the steps it was logged on; points outside them are left out)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Run:
    """One MLflow run as compare uses it."""

    name: str
    run_id: str
    seed: str
    values: tuple  # its value of each group key
    task: tuple  # (game or data, rollout mode, max_steps)
    status: str
    max_steps: int | None
    tags: dict
    params: dict
    metrics: dict  # MLflow's latest value of each metric (the summary metrics among them)
    steps: dict = field(default_factory=dict)  # metric → [(step, value, timestamp)], sorted by step
    history: dict = field(default_factory=dict)  # metric → [(x, value)] on the chosen x-axis, sorted by x

    @property
    def last_step(self) -> int | None:
        logged = [points[-1][0] for points in self.steps.values() if points]
        return max(logged) if logged else None

    @property
    def complete(self) -> bool:
        """FINISHED, and both its last logged step and its ``summary/steps`` (where logged) reach max_steps."""
        last, done = self.last_step, self.metrics.get("summary/steps")
        if self.status != "FINISHED" or last is None:
            return False
        return self.max_steps is None or (last + 1 >= self.max_steps and (done is None or done >= self.max_steps))

    def final(self, metric: str) -> float | None:
        points = self.steps.get(metric)
        return points[-1][1] if points else None


def group_keys(group_by) -> list[str]:
    """``group_by`` as a list of keys: a single string is one key."""
    keys = [group_by] if isinstance(group_by, str) else [str(k) for k in group_by]
    if not keys or any(not k for k in keys):
        raise SystemExit(f"lit_nash compare: group_by must name at least one tag or params.<key>; got {group_by!r}")
    return keys


def short_names(keys: list[str]) -> list[str]:
    """Each key's name in labels and headers: its last dotted part (``params.algo.tau`` → ``tau``), or the
    whole key without ``params.``/``tags.`` where two keys would share the last part."""
    bare = [k.split(".", 1)[1] if k.startswith(("params.", "tags.")) else k for k in keys]
    last = [b.rsplit(".", 1)[-1] for b in bare]
    return [l if last.count(l) == 1 else b for b, l in zip(bare, last)]


def header(keys: list[str]) -> str:
    """The group column's title: the key itself for one key (``algo``), the short names for several."""
    return keys[0] if len(keys) == 1 else ", ".join(short_names(keys))


def run_value(run, key: str) -> str | None:
    """A run's value of a group key: ``params.<name>`` a logged param, ``tags.<name>`` or ``<name>`` a tag."""
    if key.startswith("params."):
        return run.data.params.get(key[len("params."):])
    return run.data.tags.get(key[len("tags."):] if key.startswith("tags.") else key)


def label(values: tuple, names: list[str]) -> str:
    """``("egpo", "0.1", "1")`` → ``egpo tau=0.1 eta=1``: the first key bare, missing values left out."""
    return " ".join(v if i == 0 else f"{n}={v}" for i, (v, n) in enumerate(zip(values, names)) if v is not None)


def natural(value):
    """Sort key of one group value: missing first, then numbers by value, then text."""
    if value is None:
        return (0, 0.0, "")
    try:
        return (1, float(value), value)
    except ValueError:
        return (2, 0.0, value)


def task_identity(run) -> tuple:
    """What a run is a run of: its game or prompt dataset, its rollout mode, its length in optimizer steps and
    the game's size (the tag ``responses``: token games of 4 and 16 words are both ``token_game``). Runs that
    differ in any are not seeds of one experiment."""
    tags, params = run.data.tags, run.data.params
    return (tags.get("game") or tags.get("data"), tags.get("rollout") or params.get("rollout.mode"),
            params.get("trainer.max_steps"), tags.get("responses"))


def describe_task(task: tuple) -> str:
    what, mode, steps, responses = task
    what = (what or "?") + (f" ({responses} responses)" if responses else "")
    return ", ".join([what, mode or "?", f"{steps} steps" if steps else "? steps"])


def on_x(run: Run, x: str) -> dict[str, list[tuple[float, float]]]:
    """Each loaded metric's points on the x-axis ``x`` (module docstring)."""
    if x == "step":
        return {m: [(p[0], p[1]) for p in points] for m, points in run.steps.items()}
    if x == "time":
        first = min((p[2] for points in run.steps.values() for p in points), default=0)
        return {m: [((p[2] - first) / 1000.0, p[1]) for p in points] for m, points in run.steps.items()}
    import numpy as np

    axis = run.steps.get(x) or []
    if not axis:
        return {}
    xs, vs = [p[0] for p in axis], [p[1] for p in axis]
    out = {}
    for metric, points in run.steps.items():
        inside = [p for p in points if xs[0] <= p[0] <= xs[-1]]
        placed = {float(np.interp(p[0], xs, vs)): p[1] for p in inside}  # a repeated x keeps the later point
        out[metric] = sorted(placed.items())
    return out


def training_runs(runs: list) -> list:
    """The MLflow runs that are trainings: a sweep's own run (tag ``command=sweep``) holds a comparison."""
    return [r for r in runs if r.data.tags.get("command") != "sweep"]


def load(client, runs: list, keys: list[str], metrics: list[str], x: str = "step") -> list[Run]:
    """The MLflow ``runs`` (a sweep's own run left out) as ``Run``s, with the histories of ``metrics`` (and of
    ``x`` when it is a metric) and their curves on ``x``."""
    from lit_nash import tracking

    loaded = list(dict.fromkeys([*metrics, *([x] if x not in ("step", "time") else [])]))
    out = []
    for r in training_runs(runs):
        max_steps = r.data.params.get("trainer.max_steps")
        run = Run(name=r.info.run_name or r.info.run_id, run_id=r.info.run_id,
                  seed=r.data.tags.get("seed", r.info.run_id), values=tuple(run_value(r, k) for k in keys),
                  task=task_identity(r), status=r.info.status,
                  max_steps=int(max_steps) if max_steps and max_steps.lstrip("-").isdigit() else None,
                  tags=dict(r.data.tags), params=dict(r.data.params), metrics=dict(r.data.metrics))
        run.steps = {m: h for m in loaded if m in r.data.metrics
                     for h in [tracking.metric_history(client, r.info.run_id, m, with_time=True)] if h}
        run.history = {m: h for m, h in on_x(run, x).items() if m in metrics and h}
        out.append(run)
    return out


def grouped(runs: list[Run], keys: list[str]) -> tuple[dict[str, list[Run]], list[str]]:
    """The complete runs by group label (sorted by value, split by task where there are several, one run per
    seed: the latest), and the notes to print (tasks split, runs left out, seeds repeated)."""
    names, notes = short_names(keys), []
    tasks = {r.task for r in runs}
    if len(tasks) > 1:
        notes.append(f"the runs are of {len(tasks)} different tasks ("
                     + "; ".join(describe_task(t) for t in sorted(tasks, key=lambda t: tuple(natural(v) for v in t)))
                     + "): each group is split by task")
    groups: dict[tuple, dict[str, Run]] = {}
    untagged = repeated = 0
    for run in runs:
        if all(v is None for v in run.values):
            untagged += 1
            continue
        key = run.values + ((run.task,) if len(tasks) > 1 else ())
        group = groups.setdefault(key, {})
        repeated += run.seed in group
        group[run.seed] = run  # the runs come oldest first: a rerun of a seed replaces the earlier one
    what = f"a {keys[0]!r} tag" if len(keys) == 1 and "." not in keys[0] else f"any of group_by={keys}"
    if untagged:
        notes.append(f"{untagged} run(s) without {what} left out")
    if repeated:
        notes.append(f"{repeated} run(s) repeat a seed of their group; each seed counts once, its latest run "
                     "(filter the runs, e.g. by tags.sweep, to choose others)")
    labelled: dict[str, list[Run]] = {}
    for values, group in sorted(groups.items(), key=lambda item: tuple(natural(v) for v in item[0][: len(keys)])
                                + tuple(natural(v) for v in (item[0][-1] if len(tasks) > 1 else ()))):
        name = label(values[: len(keys)], names) + (f" [{describe_task(values[-1])}]" if len(tasks) > 1 else "")
        labelled.setdefault(name, []).extend(group.values())
    return labelled, notes


def group_of(run: Run, keys: list[str], several_tasks: bool) -> str:
    """The label of the group a run would belong to."""
    return label(run.values, short_names(keys)) + (f" [{describe_task(run.task)}]" if several_tasks else "")
