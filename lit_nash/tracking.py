"""MLflow glue: flattened params for a run, the run's record in its checkpoints and MLflow tags, the
one-line summary that says where the run went, and every read and write of an MLflow store outside
Lightning's ``MLFlowLogger``: the checkpoint a ``resume=`` names, the runs ``eval`` and ``compare`` read,
their metric histories and artifacts, and ``eval``'s own run. mlflow is imported in the functions that use
it (it takes a second)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable


CONFIG_KEY = "lit_nash_config"  # the checkpoint entry that holds the run's resolved config
RUN_KEY = "lit_nash_run"  # and the one that names its MLflow run (run_id, tracking_uri), so a resume continues it


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"algo": {"eta": 1}}`` → ``{"algo.eta": 1}``; lists become strings (MLflow params are flat)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_params(value, prefix=f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return flat


# metrics that are >= 0 by definition (the last part of the name): a gap, a KL, a probability mass
NONNEGATIVE = ("duality_gap", "reg_duality_gap", "exploitability", "kl_to_ne", "invalid_mass")
ROUNDOFF = 1e-6  # below 0 by less than this is round-off (float32 LM policies included), not a value


def shown(name: str, value: float) -> float:
    """A metric as the terminal shows it: a non-negative quantity a hair below 0 by round-off
    (``kl_to_ne=-5.55e-17``) reads 0. MLflow gets the value as computed."""
    if name.rsplit("/", 1)[-1] in NONNEGATIVE and -ROUNDOFF < value < 0:
        return 0.0
    return value


def summary_line(tags: dict[str, str], steps: int, seconds: float, final: dict[str, float], run_id: str | None,
                 tracking_uri: str | None, evaluation: dict | None = None) -> str:
    """The line a run ends with: what ran, its final metrics, the latest periodic evaluation (``evaluation``:
    opponent → ``lit_nash.evaluation.WinRate``, printed with its interval and the pairs it rests on), and the
    command that opens its MLflow run."""
    shown_keys = [k for k in final if not k.startswith("game/avg_") or k == "game/avg_duality_gap"]
    gaps = " ".join(f"{k}={shown(k, final[k]):.3g}" for k in shown_keys)
    line = f"lit_nash fit: {tags['algo']} on {tags.get('game') or tags.get('data')} (seed {tags['seed']}), {steps} steps in {seconds:.1f}s | {gaps}"
    if tags.get("iterate") == "average" and "game/avg_duality_gap" in final:
        line += f" ({tags['algo']} converges on average: read game/avg_duality_gap, the last iterate may cycle)"
    if evaluation:
        line += " | " + " ".join(f"eval/win_rate_vs_{name}={rate}" for name, rate in evaluation.items())
    if run_id:
        line += f" | MLflow run {run_id}: mlflow ui --backend-store-uri {tracking_uri}"
    return line


# a final checkpoint (or an exported model folder) under 100 MB is also an artifact of its run: every tabular and
# token-game run, and a LoRA run of a small model (SmolLM2-135M with MPO: 40 MB, adapters and optimizer state); a
# full fine-tune of a real model is not copied into the store (its tag names the file)
CHECKPOINT_ARTIFACT_BYTES = 100 * 2**20


def log_run_files(client, run_id: str, checkpoint: Path | None) -> None:
    """At the end of a run: its log files (the root logger's file handlers: Hydra's ``<job>.log``) and, when
    it is a file under 100 MB, its checkpoint (``checkpoints/last.ckpt``) as artifacts of the run; a larger one
    is named by the run's tag ``checkpoint`` only, and a line says so."""
    import logging

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_file():
            handler.flush()
            client.log_artifact(run_id, handler.baseFilename)
    if checkpoint is not None and checkpoint.is_file():
        size = checkpoint.stat().st_size
        if size < CHECKPOINT_ARTIFACT_BYTES:
            client.log_artifact(run_id, str(checkpoint), "checkpoints")
        else:
            print(f"lit_nash fit: the checkpoint ({size / 2**20:.0f} MB) is over the {CHECKPOINT_ARTIFACT_BYTES >> 20} MB "
                  f"limit of MLflow artifacts: not copied into the store; the run's tag checkpoint names {str(checkpoint)!r}",
                  file=sys.stderr)


def link_export(tracking_uri: str | None, run_id: str | None, folder: Path) -> str:
    """The MLflow run's page links to an exported model folder: the tag ``export`` names it, and a folder under
    the artifact limit is logged as the artifacts ``export/<folder name>/``. Returns the note for the command's
    line ("" when there is no run to link)."""
    if not run_id or not run_exists(tracking_uri, run_id):
        return ""
    store = client(tracking_uri)
    store.set_tag(run_id, "export", str(folder))
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    if size < CHECKPOINT_ARTIFACT_BYTES:
        store.log_artifacts(run_id, str(folder), f"export/{folder.name}")
        return f"; MLflow run {run_id}: tag export, artifacts export/{folder.name}/"
    return f"; MLflow run {run_id}: tag export ({size / 2**20:.0f} MB, not copied into the store)"


def log_table_newest_first(client, run_id: str, columns: list[str], rows: list[dict], artifact_file: str) -> None:
    """``rows`` put before the rows already in the run's table ``artifact_file`` (MLflow's table format,
    ``{"columns": [...], "data": [[...], ...]}``, the one ``MlflowClient.log_table`` writes), so the newest rows
    come first; ``log_table`` itself would append them at the end. The run is tagged as ``log_table`` tags it,
    so the MLflow UI shows the file as a table. A row's missing column is empty (None); an old table's column
    that ``columns`` lacks is dropped."""
    import json
    import tempfile

    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    data = [[row.get(c) for c in columns] for row in rows]
    folder = str(Path(artifact_file).parent)
    folder = None if folder == "." else folder
    if artifact_file in {a.path for a in client.list_artifacts(run_id, folder)}:
        old = json.loads(download_artifact(client, run_id, artifact_file))
        at = {c: i for i, c in enumerate(old.get("columns", []))}
        data += [[r[at[c]] if c in at else None for c in columns] for r in old.get("data", [])]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text(json.dumps({"columns": columns, "data": data}))
        client.log_artifact(run_id, str(path), folder)
    logged = json.loads(client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    if {"path": artifact_file, "type": "table"} not in logged:
        client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, {"path": artifact_file, "type": "table"}]))


def reachable(tracking_uri: str | None, key: str, command: str, timeout: float = 2.0) -> None:
    """An ``http(s)://`` tracking server must answer a TCP connect within ``timeout`` seconds, else exit with
    one line that says what to do (MLflow's own client retries for minutes, silently). Other URIs pass."""
    import socket
    from urllib.parse import urlsplit

    if not tracking_uri or not str(tracking_uri).startswith(("http://", "https://")):
        return
    url = urlsplit(str(tracking_uri))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise SystemExit(
            f"lit_nash {command}: no MLflow tracking server answers at {key}={tracking_uri} "
            f"({e.strerror or f'{e} after {timeout:g} s'}); start it (mlflow server --host {url.hostname} --port {port}), or log to a local store: "
            f"{key}=sqlite:///mlruns.db"
        ) from None


SQLITE_HEADER = b"SQLite format 3\x00"
MLFLOW_TABLES = {"experiments", "alembic_version"}  # an MLflow sqlite store holds both; a new one gets one first


def check_store(tracking_uri: str | None, key: str, command: str) -> None:
    """The store a command will log to or read from, checked at start-up (before torch loads): an
    ``http(s)://`` server must answer (``reachable``); a path without a scheme (``mlruns.db``, a folder) is
    refused with the ``sqlite:///`` URI to write instead; a ``sqlite:///`` file that exists must be an MLflow
    store: not a folder, not a file of another kind, not another application's SQLite database (MLflow would add
    its tables to it). Each refusal is one line, and the file is never opened for writing."""
    reachable(tracking_uri, key, command)
    if not tracking_uri:
        return
    uri = str(tracking_uri)
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        local = Path(uri).expanduser().resolve()
        db = local / "mlruns.db" if local.is_dir() or not local.suffix else local
        raise SystemExit(f"lit_nash {command}: {key}={uri!r} is a path, not a tracking URI (MLflow would take it for "
                         f"its retired folder store); for a local store write {key}=sqlite:///{db}")
    if uri.startswith("sqlite://") and not uri.startswith("sqlite:///"):
        raise SystemExit(f"lit_nash {command}: {key}={uri!r}: a sqlite URI has three slashes before a relative path "
                         f"and four before an absolute one: {key}=sqlite:///{uri[len('sqlite://'):]}")
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    if db.is_dir():
        raise SystemExit(f"lit_nash {command}: {key}={uri!r} names a folder; name the store's file in it: "
                         f"{key}=sqlite:///{db / 'mlruns.db'}")
    if not db.is_file() or db.stat().st_size == 0:  # a new store: MLflow creates it
        return
    fix = (f"move it away (mv {str(db)!r} {str(db) + '.bak'!r}) and this run creates a new store there, or log to "
           f"another file: {key}=sqlite:///<path>/mlruns.db")
    try:
        with open(db, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except PermissionError:
        raise SystemExit(f"lit_nash {command}: {key}={uri!r}: permission denied reading {str(db)!r}; fix its "
                         "permissions (chmod u+rw), or log to another file") from None
    if header != SQLITE_HEADER:
        raise SystemExit(f"lit_nash {command}: {key}={uri!r}: {str(db)!r} is not an SQLite database (it starts with "
                         f"{header[:8]!r}; a corrupt or foreign file); {fix}")
    import sqlite3

    try:  # read-only; waits for a writer (another run logging, or creating the store) rather than fail
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=60)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.OperationalError as e:
        if "locked" in str(e):
            return  # busy for a minute: MLflow will wait or say so itself
        raise SystemExit(f"lit_nash {command}: {key}={uri!r}: {str(db)!r} is a corrupt SQLite database ({e}); "
                         f"{fix}") from None
    except sqlite3.DatabaseError as e:
        raise SystemExit(f"lit_nash {command}: {key}={uri!r}: {str(db)!r} is a corrupt SQLite database ({e}); "
                         f"{fix}") from None
    if tables and not MLFLOW_TABLES & tables:
        shown = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
        raise SystemExit(f"lit_nash {command}: {key}={uri!r}: {str(db)!r} is an SQLite database of another "
                         f"application (tables {shown}), not an MLflow store; MLflow would add its tables to it. "
                         f"Log to another file: {key}=sqlite:///<path>/mlruns.db")


def prepare_store(tracking_uri: str | None, experiment: str | None, key: str, command: str) -> None:
    """Make the store ready before a run logs to it. An ``http(s)://`` server: it must answer (``reachable``).
    A ``sqlite:///`` store: created (MLflow's schema migration) and its experiment created under an exclusive
    ``flock`` on ``<db>.lock``, so that runs starting at once in one folder do not race to create them (the
    loser would die in the migration or on the experiment's unique name). ``check_store`` first."""
    check_store(tracking_uri, key, command)
    if not tracking_uri or not str(tracking_uri).startswith("sqlite:///"):
        return
    import fcntl

    from mlflow import MlflowClient

    db = Path(str(tracking_uri)[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        store = MlflowClient(str(tracking_uri))
        store.search_experiments(max_results=1)  # creates the tables, or waits for nothing when they exist
        if experiment and store.get_experiment_by_name(experiment) is None:
            store.create_experiment(experiment)
        if experiment:
            from lit_nash.mlflow_views import described

            described(store, experiment, command)


class Stopped(SystemExit):
    """SIGTERM or SIGINT, raised in the main thread by ``marks_run``'s handler; exits 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.name = signal.Signals(signum).name


@contextmanager
def marks_run(run: Callable[[], tuple[Any, str | None]], command: str):
    """Around a command's MLflow run: an exception marks it FAILED, SIGTERM or Ctrl+C marks it KILLED (and
    exits 143 or 130 with one line), so no run stays RUNNING after its process is gone. ``run()`` gives the
    (client, run id) when needed; a run id of None: no run was created, nothing to mark."""

    def stop(signum, frame):
        raise Stopped(signum)

    signals = (signal.SIGINT, signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()  # Python delivers signals to the main thread
    previous = {sig: signal.signal(sig, stop) for sig in signals} if main else {}
    try:
        yield
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            e = Stopped(signal.SIGINT)
        elif type(e).__name__ == "SIGTERMException":  # Lightning's, when its own handler saw SIGTERM first
            e = Stopped(signal.SIGTERM)
        store, run_id = run()
        if run_id is not None:
            store.set_terminated(run_id, status="KILLED" if isinstance(e, Stopped) else "FAILED")
        if isinstance(e, Stopped):
            print(f"lit_nash {command}: stopped by {e.name}" + (f"; MLflow run {run_id} marked KILLED" if run_id else ""),
                  file=sys.stderr)
            raise SystemExit(e.code) from None
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def client(tracking_uri: str | None, missing: str | None = None):
    """An ``MlflowClient`` of the store at ``tracking_uri``. A ``sqlite:///`` store whose file does not exist:
    with ``missing``, exit with that message (``{uri}`` and ``{db}`` filled in) instead of letting MLflow
    create an empty store there; without it, MLflow creates the store."""
    from mlflow import MlflowClient

    if missing is not None and tracking_uri and tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():
            raise SystemExit(missing.format(uri=tracking_uri, db=db))
    return MlflowClient(tracking_uri)


def run_exists(tracking_uri: str | None, run_id: str) -> bool:
    """Whether the store holds this run; a ``sqlite:///`` store whose file is gone holds none (and is not
    created by asking)."""
    if tracking_uri and str(tracking_uri).startswith("sqlite:///") and not Path(str(tracking_uri)[len("sqlite:///"):]).is_file():
        return False
    return get_run(client(tracking_uri), run_id) is not None


def get_run(client, run_id: str):
    """The MLflow run with this id, or None if the store has none (MLflow raises its own exception)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def checkpoint_of_run(tracking_uri: str | None, run_id: str) -> Path:
    """``resume=<run id>``: the checkpoint file the run's ``checkpoint`` tag names (``RunRecord`` sets it)."""
    store = client(tracking_uri)
    try:
        run = store.get_run(run_id)
    except Exception as e:  # mlflow raises its own MlflowException for an unknown id
        raise FileNotFoundError(f"resume={run_id!r}: no such MLflow run in {tracking_uri}") from e
    tag = run.data.tags.get("checkpoint")
    if not tag or not Path(tag).exists():  # a file, or a sharded folder
        raise FileNotFoundError(f"resume={run_id!r}: the run has no checkpoint on disk (tag checkpoint={tag!r})")
    return Path(tag)


def latest_checkpoint(tracking_uri: str | None, experiment: str | None) -> Path:
    """``resume=last``: the checkpoint of the newest run of ``experiment`` whose checkpoint is on disk."""
    store = client(tracking_uri)
    found = store.get_experiment_by_name(experiment) if experiment else None
    runs = store.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"]) if found else []
    for run in runs:
        tag = run.data.tags.get("checkpoint")
        if tag and Path(tag).exists():  # a file, or a sharded folder
            return Path(tag)
    raise FileNotFoundError(f"resume=last: no run of experiment {experiment!r} in {tracking_uri} has a checkpoint on disk")


def experiment_names(client) -> list[str]:
    """The names of the store's experiments, sorted."""
    return sorted(e.name for e in client.search_experiments())


def finished_runs(client, experiment: str, filter_string: str | None, command: str) -> list:
    """The finished runs of ``experiment`` that match the MLflow search filter, oldest first (every page of
    the search). No such experiment: exit with ``lit_nash <command>: no experiment ...``, naming those there."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"lit_nash {command}: no experiment {experiment!r} in {client.tracking_uri}; "
                         f"the experiments there are {experiment_names(client)}")
    return [r for r in all_runs(client, found.experiment_id, filter_string) if r.info.status == "FINISHED"]


def all_runs(client, experiment_id: str, filter_string: str | None) -> list:
    """Every run of the experiment that matches the MLflow search filter, whatever its status, oldest first
    (every page of the search)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string or "",
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def metric_history(client, run_id: str, metric: str, with_time: bool = False) -> list[tuple]:
    """``[(step, value), ...]`` sorted by step, a step logged twice with its latest value; [] if never logged.
    ``with_time``: ``(step, value, timestamp in ms)``."""
    last = {}
    for p in sorted(client.get_metric_history(run_id, metric), key=lambda p: (p.step, p.timestamp)):
        last[p.step] = (p.step, p.value, p.timestamp) if with_time else (p.step, p.value)  # the latest value wins
    return [last[step] for step in sorted(last)]


def start_eval_run(tracking_uri: str, experiment: str, policies: list[str], source_experiment: str | None):
    """``eval``'s MLflow run, created first so the files can name it (the experiment too, if new): tagged
    ``command=eval``, its policies, and the experiment it drew them from (``source_experiment``, which
    ``latest_eval_run`` looks for). Returns (client, run id)."""
    prepare_store(tracking_uri, experiment, "tracking_uri", "eval")
    store = client(tracking_uri)
    found = store.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else store.create_experiment(experiment)
    run = store.create_run(experiment_id, run_name=f"eval-{len(policies)}-policies",
                           tags={"command": "eval", "policies": ", ".join(policies)[:5000],
                                 **({"source_experiment": source_experiment} if source_experiment else {})})
    return store, run.info.run_id


def log_eval_run(client, run_id: str, params: dict[str, Any], policies: dict[str, dict[str, float]], folder: Path,
                 policy_tags: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The evaluation's run gets the params and every file of ``folder`` as an artifact; each policy gets a
    child run of it (nested under it in the MLflow UI: tag ``mlflow.parentRunId``), named after the policy,
    tagged ``policy=<name>`` (and ``policy_tags[name]``), with that policy's metrics at step 0, so the UI's
    charts compare the policies as runs, one bar per policy under one metric name. Then all are finished.
    Returns the child run ids by policy."""
    import time

    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    experiment_id = client.get_run(run_id).info.experiment_id
    children = {}
    for name, metrics in policies.items():
        tags = {MLFLOW_PARENT_RUN_ID: run_id, "command": "eval", "policy": name, **(policy_tags or {}).get(name, {})}
        child = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(child, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(child)
        children[name] = child
    client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id)
    return children


def latest_eval_run(client, eval_experiment: str, source_experiment: str) -> str | None:
    """The id of the newest finished ``eval`` run of ``eval_experiment`` that drew its policies from
    ``source_experiment``; None if there is none."""
    found = client.get_experiment_by_name(eval_experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.source_experiment = '{source_experiment}'",  # not a policy's child run
                              order_by=["attributes.start_time DESC"], max_results=5)
    runs = [r for r in runs if r.info.status == "FINISHED"]
    return runs[0].info.run_id if runs else None


def download_artifact(client, run_id: str, path: str) -> str:
    """The text of one artifact of a run (downloaded to a temporary folder, removed again)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with open(client.download_artifacts(run_id, path, tmp)) as f:
            return f.read()
