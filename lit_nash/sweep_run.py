"""A sweep (``fit -m``) is one MLflow run with its jobs nested under it (a Hydra callback, ``conf/fit.yaml``:
``hydra.callbacks``).

When the sweep starts, ``SweepRun`` creates the parent run in the sweep's experiment: named after the sweep,
its params the sweep's overrides (the swept lists, ``algo=mpo,comal``, and the fixed values), its description
what the sweep asks (the header of ``sweeps/<name>.yaml``, which also becomes the experiment's description
with the lit_nash view of its runs, ``lit_nash.mlflow_views``). It writes the parent's id to the sweep folder
(``mlflow_parent_run.json``); each job reads it there (``parent_tags``, from ``fit``) and tags its run
``mlflow.parentRunId``, so the MLflow UI nests the jobs under the sweep. The file works for every launcher:
jobs in other processes read the same folder.

When the sweep ends, ``compare`` runs on the jobs (``tags.mlflow.parentRunId``), grouped by ``algo`` and every
other swept config value, and its outputs become the parent's: ``table.md``/``.csv``, ``ranking.md``/``.csv``
(also as MLflow tables ``table.json`` and ``ranking.json``), the curves as PNG and PDF; the ranking goes into
the parent's description, and the parent is FINISHED. A sweep that stops before its end (a failed job, a
signal) leaves its parent FAILED, with the outputs of the jobs that completed."""

from __future__ import annotations

import atexit
import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

PARENT_FILE = "mlflow_parent_run.json"
PENDING = " The comparison of its jobs (table, ranking, curves) is written here when the sweep ends."
NOTE = "mlflow.note.content"
PARENT_TAG = "mlflow.parentRunId"
log = logging.getLogger(__name__)


def sweep_folder(config: DictConfig) -> Path:
    folder = Path(str(config.hydra.sweep.dir))
    return folder if folder.is_absolute() else Path(str(config.hydra.runtime.cwd)) / folder


def resolved(config: DictConfig, key: str):
    """A config value, with ``${hydra:runtime.cwd}`` filled in by hand (no job runs yet, so Hydra's resolver has
    no job config to read)."""
    raw = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    if raw is None:
        node = OmegaConf.to_container(config, resolve=False)
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        raw = node
    return None if raw is None else str(raw).replace("${hydra:runtime.cwd}", str(config.hydra.runtime.cwd))


def sweep_header(name: str | None) -> str:
    """What the sweep asks: the comment block at the top of ``sweeps/<name>.yaml`` as markdown (prose, then its
    commands as code); "" for a sweep without a preset."""
    if not name:
        return ""
    from importlib.resources import files

    try:
        text = files("lit_nash.conf.sweep").joinpath(f"{name}.yaml").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return ""
    prose, commands = [], []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:]
        if body.strip().startswith("@package"):
            continue
        (commands if body.startswith("   ") else prose).append(body.strip())
    return " ".join(prose) + ("\n\n```\n" + "\n".join(commands) + "\n```" if commands else "")


def swept_keys(config: DictConfig) -> list[str]:
    """The keys the sweep varies: its command line's lists (``algo=mpo,comal``) and its preset's
    ``hydra.sweeper.params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [str(o) for o in config.hydra.overrides.task]
    overrides += [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return list(dict.fromkeys(o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()))


def group_by(keys: list[str], groups: set[str]) -> list[str]:
    """compare's ``group_by`` for a sweep: ``algo`` first, then each swept config value (``params.algo.eta``);
    a swept config group other than the algorithm, the game (compare splits tasks itself) and the seed is
    grouped by its ``_target_``."""
    out = ["algo"]
    for key in keys:
        if key in ("seed", "algo", "game", "rollout") or key.startswith("sweep/"):
            continue
        out.append(f"params.{key}" if key not in groups else f"params.{key}._target_")
    return list(dict.fromkeys(out))


class SweepRun(Callback):
    """The sweep's MLflow parent run (module docstring)."""

    def __init__(self) -> None:
        self.client = self.run_id = self.folder = None
        self.ended = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._start(config)
        except Exception as e:  # no parent run rather than no sweep
            log.warning("lit_nash sweep: no MLflow parent run (%s: %s)", type(e).__name__, e)
            self.run_id = None

    def _start(self, config: DictConfig) -> None:
        from mlflow.entities import Param, RunTag

        from lit_nash import tracking
        from lit_nash.mlflow_views import described, view_state

        uri, experiment = resolved(config, "logger.tracking_uri"), resolved(config, "logger.experiment_name")
        if not uri or not experiment:
            return
        quiet = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables...": a job's
        level = quiet.level  # log file has those lines; the sweep's terminal does not
        quiet.setLevel(logging.WARNING)
        try:
            tracking.prepare_store(uri, None, "logger.tracking_uri", "fit")
        finally:
            quiet.setLevel(level)
        self.client = tracking.client(uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        name = OmegaConf.select(config, "hydra.runtime.choices.sweep")
        self.folder = sweep_folder(config)
        header = sweep_header(name)
        if header:
            described(self.client, experiment, "sweep", f"Sweep `{name}`: {header}",
                               view_state(search="tags.algo LIKE '%'"))
        else:
            described(self.client, experiment, "fit")
        overrides = [str(o) for o in config.hydra.overrides.task]
        sweeper = {str(k): str(v) for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()}
        params = {**sweeper, **dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)}
        what = name or "sweep"
        text = ((f"Sweep `{name}`." if name else f"Sweep `python -m lit_nash fit -m {' '.join(overrides)}`.") + PENDING
                + (f"\n\n{header}" if header else "")
                + f"\n\nOverrides: `{' '.join(overrides) or '(none)'}`. Jobs' folders: `{self.folder}`.")
        run = self.client.create_run(experiment_id, run_name="-".join(["sweep", *([name] if name else []), time.strftime("%H%M%S")]),
                                     tags={"command": "sweep", "sweep": what, NOTE: text})
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k[:250], v[:6000]) for k, v in params.items()],
                              tags=[RunTag("sweep_dir", str(self.folder))])
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / PARENT_FILE).write_text(json.dumps({"run_id": self.run_id, "tracking_uri": uri,
                                                           "experiment_id": experiment_id}))
        self.keys = group_by(swept_keys(config), set(OmegaConf.select(config, "hydra.runtime.choices") or {}))
        self.uri, self.experiment = uri, experiment
        atexit.register(self._stopped)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None or self.ended:
            return
        self.ended = True
        try:
            self._conclude("FINISHED")
        except Exception as e:
            log.warning("lit_nash sweep: the comparison for MLflow run %s failed (%s: %s)", self.run_id, type(e).__name__, e)
            self.client.set_terminated(self.run_id, "FAILED")

    def _stopped(self) -> None:
        """At exit, a sweep that did not reach its end: what completed is compared, the parent is FAILED."""
        if self.run_id is None or self.ended:
            return
        self.ended = True
        try:
            self._conclude("FAILED")
        except BaseException:
            self.client.set_terminated(self.run_id, "FAILED")

    def _conclude(self, status: str) -> None:
        """compare on the jobs, its outputs logged to the parent, the ranking into its description."""
        from lit_nash.compare import compare

        out = self.folder / "compare"
        cfg = _compare_config()
        cfg.tracking_uri, cfg.experiment, cfg.out = self.uri, self.experiment, str(out)
        cfg.filter = f"tags.`{PARENT_TAG}` = '{self.run_id}'"
        cfg.group_by, cfg.eval_experiment = list(self.keys), None
        try:
            written = compare(cfg, quiet=True)
        except SystemExit as e:  # no job completed: nothing to compare
            self.client.set_tag(self.run_id, NOTE, self.client.get_run(self.run_id).data.tags.get(NOTE, "")
                                + f"\n\nNo comparison: {e}")
            self.client.set_terminated(self.run_id, "FAILED" if status == "FINISHED" else status)
            return
        self.client.log_artifacts(self.run_id, str(out))
        for table in ("table", "ranking"):
            if f"{table}.csv" in written:
                with open(out / f"{table}.csv", newline="") as f:
                    rows = list(csv.DictReader(f))
                if rows:
                    self.client.log_table(self.run_id, {k: [rounded(r[k]) for r in rows] for k in rows[0]}, f"{table}.json")
        ranking = (out / "ranking.md").read_text().strip() if (out / "ranking.md").is_file() else ""
        results = ("\n\n" + ranking if ranking else "") + (
            "\n\nArtifacts: `table.md` (every metric: the mean over seeds ± its 95% interval), `ranking.md`, "
            "`curve_<metric>.png` and `.pdf`.")
        self.client.set_tag(self.run_id, NOTE, self.client.get_run(self.run_id).data.tags.get(NOTE, "").replace(PENDING, results))
        if "ranking.csv" in written:
            self._log_ranking(out / "ranking.csv")
        self.client.set_terminated(self.run_id, status)
        print(f"lit_nash sweep: MLflow run {self.run_id} ({self.experiment}) holds the comparison of its jobs: "
              f"table, ranking and curves, also in {out}", flush=True)


    def _log_ranking(self, path: Path) -> None:
        """The ranking as the parent's metrics: per group ``rank/<group>`` (1 = best) and ``mean/<group>`` with
        ``ci95/<group>``, the rank metric's mean over seeds and its half-width."""
        import re

        from mlflow.entities import Metric

        now, metrics = int(time.time() * 1000), []
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                group = re.sub(r"[^A-Za-z0-9_\-. /]", "_", row["group"])
                mean = next(v for k, v in row.items() if k.endswith("_mean"))
                low, high = (next(v for k, v in row.items() if k.endswith(end)) for end in ("_ci95_low", "_ci95_high"))
                metrics += [Metric(f"rank/{group}", float(row["rank"]), now, 0), Metric(f"mean/{group}", float(mean), now, 0)]
                if low and high:
                    metrics.append(Metric(f"ci95/{group}", (float(high) - float(low)) / 2, now, 0))
        self.client.log_batch(self.run_id, metrics=metrics)


def rounded(value: str):
    """A CSV cell for an MLflow table: a number with 4 significant digits, text as it is."""
    for kind in (int, float):
        try:
            return kind(value) if kind is int else float(f"{float(value):.4g}")
        except ValueError:
            pass
    return value


def _compare_config() -> DictConfig:
    """``conf/compare.yaml`` as installed, its keys with interpolations left for the caller to set."""
    from importlib.resources import files

    return OmegaConf.create(OmegaConf.to_container(
        OmegaConf.load(files("lit_nash.conf").joinpath("compare.yaml").open()), resolve=False))


def parent_tags(cfg: DictConfig) -> dict[str, str]:
    """In a job of a sweep: ``mlflow.parentRunId`` of the sweep's run, when the job logs to the same store and
    experiment; {} otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hydra = HydraConfig.get()
    folder = Path(hydra.sweep.dir)
    file = (folder if folder.is_absolute() else Path(hydra.runtime.cwd) / folder) / PARENT_FILE
    if not file.is_file():
        return {}
    parent = json.loads(file.read_text())
    if parent.get("tracking_uri") != cfg.logger.get("tracking_uri"):
        return {}
    from lit_nash.tracking import client

    found = client(parent["tracking_uri"]).get_experiment_by_name(str(cfg.logger.get("experiment_name")))
    return {PARENT_TAG: parent["run_id"]} if found is not None and found.experiment_id == parent["experiment_id"] else {}
