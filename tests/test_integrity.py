"""Runs at once and environment failures, through the real CLI (subprocesses), MLflow store and checkpoints.

* two ``fit`` runs started at the same moment in one fresh folder both succeed: they create the sqlite store
  one at a time, and each owns its run folder and its ``last.ckpt`` (its MLflow tag names its own file);
* a run refuses a checkpoint folder whose ``last.ckpt`` is another run's, and resuming that run is allowed;
* the temporary files a killed writer left are removed at the next start, a live writer's are kept;
* SIGTERM during ``eval`` marks its MLflow run KILLED, an exception marks it FAILED;
* two ``fit -m`` started at once own their sweep folders, and a parallel joblib sweep (2 worker processes)
  gives every job its own folder, checkpoint and MLflow run in one shared store.

The bad inputs (an unreachable tracking server, step counts, seeds, unknown keys) are in test_bad_inputs.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch

from lit_nash.run_groups import training_runs
from lit_nash.tracking import RUN_KEY
from tests.cli import REPO, run_cli

ENV = {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
QUICK = ["game=weighted_rps", "trainer.max_steps=3", "trainer.enable_progress_bar=false"]


def popen_fit(cwd, *overrides) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lit_nash", "fit", *QUICK, *overrides], cwd=cwd,
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs(tmp_path, experiment: str = "lit_nash"):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    found = client.get_experiment_by_name(experiment)
    found = client.search_runs([found.experiment_id]) if found else []
    return client, training_runs(found)  # not a sweep's own run


def test_two_fits_started_at_once_in_a_fresh_folder_own_their_folders_and_share_the_store(tmp_path):
    procs = [popen_fit(tmp_path, f"seed={seed}") for seed in (0, 1)]  # the same second, the same new store
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    folders = sorted(tmp_path.glob("outputs/*/*"))
    assert len(folders) == 2, folders  # one run folder each (time to the microsecond and the pid)
    checkpoints = sorted(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt"))
    assert len(checkpoints) == 2
    client, found = runs(tmp_path)
    assert len(found) == 2 and {r.info.status for r in found} == {"FINISHED"}
    assert sorted(r.data.tags["checkpoint"] for r in found) == [str(p) for p in checkpoints]
    for run in found:  # each checkpoint is its run's: the tag's file carries the run's own id
        saved = torch.load(run.data.tags["checkpoint"], weights_only=True)
        assert saved[RUN_KEY]["run_id"] == run.info.run_id and saved["global_step"] == 3


def popen_multirun(cwd, *overrides) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lit_nash", "fit", "-m", *QUICK, *overrides], cwd=cwd,
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_jobs_own_their_runs(tmp_path, sweeps: int, jobs: int):
    """Each sweep its own folder, each job its own subfolder, checkpoint and FINISHED MLflow run, one store."""
    folders = sorted(tmp_path.glob("multirun/*/*"))
    assert len(folders) == sweeps, folders
    checkpoints = sorted(tmp_path.glob("multirun/*/*/[0-9]*/checkpoints/last.ckpt"))
    assert len(checkpoints) == sweeps * jobs, checkpoints
    _, found = runs(tmp_path)
    assert len(found) == sweeps * jobs and {r.info.status for r in found} == {"FINISHED"}
    assert sorted(r.data.tags["checkpoint"] for r in found) == [str(p) for p in checkpoints]
    for run in found:
        saved = torch.load(run.data.tags["checkpoint"], weights_only=True)
        assert saved[RUN_KEY]["run_id"] == run.info.run_id


def test_two_multiruns_started_at_once_own_their_sweep_folders(tmp_path):
    """Hydra's default sweep folder has one-second resolution: two ``fit -m`` started together would share
    job 0's folder. lit_nash's is the time to the microsecond and the launching process's id."""
    procs = [popen_multirun(tmp_path, "seed=0,1", f"algo={algo}") for algo in ("mpo", "mmd")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    check_jobs_own_their_runs(tmp_path, sweeps=2, jobs=2)


def test_a_parallel_joblib_sweep_runs_each_job_in_its_own_folder_checkpoint_and_mlflow_run(tmp_path):
    """``hydra/launcher=joblib`` with 2 workers: the jobs run at the same time in two worker processes, which
    resolve the sweep folder again (they read the launcher's value from the environment), create the store
    together and each write their own checkpoint and MLflow run."""
    p = popen_multirun(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2,3")
    out, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-3000:]
    check_jobs_own_their_runs(tmp_path, sweeps=1, jobs=4)
    _, found = runs(tmp_path)
    assert sorted(r.data.tags["seed"] for r in found) == ["0", "1", "2", "3"]
    assert len({r.data.tags["sweep"] for r in found}) == 1
    # the sweep's summary (lit_nash/sweep_summary.py) reads the workers' job folders: a line for each job
    assert "lit_nash sweep: 4 jobs in " in out and all(f"  job {k}  seed={k}: game/duality_gap=" in out for k in range(4)), out
    assert "  best: (one setting) (game/duality_gap " in out and "over 4 seeds" in out, out  # the jobs differ by seed only
    # the workers' jobs find the sweep's MLflow run in the sweep folder and nest under it (lit_nash/sweep_run.py)
    parents = {r.data.tags.get("mlflow.parentRunId") for r in found}
    assert len(parents) == 1 and None not in parents


def test_a_run_keeps_out_of_another_runs_checkpoint_folder_and_clears_dead_writers_temporaries(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no process has any more
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (folder / f".last.ckpt.tmp-{dead.pid}").write_bytes(b"half a checkpoint")
        (folder / f".last.ckpt.tmp-{live.pid}").write_bytes(b"a write in progress")
        first = run_cli("fit", *QUICK, f"checkpoint.dir={folder}", cwd=tmp_path, env=ENV)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "removed 1 temporary checkpoint file(s)" in first.stderr and f".last.ckpt.tmp-{dead.pid}" in first.stderr
        assert sorted(p.name for p in folder.iterdir()) == sorted([f".last.ckpt.tmp-{live.pid}", "last.ckpt"])
    finally:
        live.kill()
        live.wait()
    last = folder / "last.ckpt"
    before = hashlib.sha256(last.read_bytes()).hexdigest()

    other = run_cli("fit", *QUICK, f"checkpoint.dir={folder}", cwd=tmp_path, env=ENV)  # another run, same folder
    assert other.returncode != 0
    (line,) = [x for x in other.stderr.splitlines() if x.startswith("lit_nash fit:")]
    assert f"already holds '{last}', the checkpoint of another run (MLflow run" in line and f"resume={last}" in line
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before
    client, found = runs(tmp_path)
    assert len(found) == 1  # the refused run created no MLflow run

    resumed = run_cli("fit", f"resume={last}", "trainer.max_steps=5", "trainer.enable_progress_bar=false",
                      cwd=tmp_path, env=ENV)  # the run itself may continue into its own folder
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == 5


def test_sigterm_marks_an_eval_run_killed_and_an_exception_marks_it_failed(tmp_path):
    fit = run_cli("fit", *QUICK, cwd=tmp_path, env=ENV)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (checkpoint,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    judge = ["preference=game", "preference._target_=tests.faults.SlowGameOracle"]
    args = [sys.executable, "-m", "lit_nash", "eval", f"policies=['{checkpoint}']", *judge, "+preference.seconds=600"]
    slow = subprocess.Popen(args, cwd=tmp_path, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not runs(tmp_path, "lit_nash_eval")[1]:  # its MLflow run exists: the matches are playing
            if slow.poll() is not None or time.monotonic() > deadline:  # never wait out the oracle's 600 s
                slow.kill()
                pytest.fail(f"eval's MLflow run did not appear: {slow.communicate()[1][-3000:]}")
            time.sleep(0.5)
        slow.send_signal(signal.SIGTERM)
        _, err = slow.communicate(timeout=60)
    finally:
        slow.kill()
    assert slow.returncode == 143, err[-3000:]
    client, (run,) = runs(tmp_path, "lit_nash_eval")
    assert run.info.status == "KILLED"
    assert f"lit_nash eval: stopped by SIGTERM; MLflow run {run.info.run_id} marked KILLED" in err

    failed = run_cli("eval", f"policies=['{checkpoint}']", *judge, "+preference.error=true", cwd=tmp_path, env=ENV)
    assert failed.returncode != 0 and "the injected failure" in failed.stderr
    client, found = runs(tmp_path, "lit_nash_eval")
    assert sorted(r.info.status for r in found) == ["FAILED", "KILLED"]
