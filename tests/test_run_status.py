"""What a run's MLflow record says, through the real CLI (issue 25): no run that stopped before its last step is
FINISHED, a signal stops a whole sweep (a closed terminal pipe included) and the sweep continues as a whole, a
resume that cannot be made changes nothing, and a run is FINISHED only after its checkpoint is uploaded.

Tags read by ``compare``: ``completed`` (``true`` at the last step), ``max_steps`` and ``last_step``
(``lit_nash.run_status``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from lit_nash.run_groups import training_runs

from .cli import REPO, run_cli
from .test_bad_inputs import mlflow_snapshot

ENV = {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
QUIET = ["trainer.enable_progress_bar=false"]


def runs(cwd: Path, experiment: str = "lit_nash") -> tuple[mlflow.MlflowClient, list]:
    """The fit runs (a sweep's own run, tag command=sweep, holds no training: left out)."""
    client = mlflow.MlflowClient(f"sqlite:///{cwd}/mlruns.db")
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, training_runs(found)


def tags(run) -> tuple[str, str | None, str | None, str | None]:
    return run.info.status, run.data.tags.get("completed"), run.data.tags.get("last_step"), run.data.tags.get("max_steps")


def test_a_signal_through_a_closed_pipe_stops_the_whole_sweep_which_then_continues_as_a_whole(tmp_path):
    """``fit -m ... 2>&1 | tee log`` and Ctrl+C: tee dies with the job, so every later write finds a closed pipe.
    The interrupted job is KILLED (not FINISHED), the sweep stops there (exit 130, no later job starts), and
    ``fit -m resume=<sweep folder>`` keeps the finished job untouched, resumes the stopped one into its own
    MLflow run and runs the job that never started."""
    sweep = tmp_path / "sweep"
    args = ["fit", "-m", "seed=0,1,2", "game=weighted_rps", "rollout=sampled", "trainer.max_steps=6",
            "checkpoint.every_n_steps=2", *QUIET, "+callbacks.fault._target_=tests.faults.InterruptJob",
            "+callbacks.fault.job=1", "+callbacks.fault.step=3", "hydra.sweep.dir=sweep"]
    stopped = subprocess.Popen([sys.executable, "-m", "lit_nash", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env={**os.environ, **ENV})
    stopped.stdout.close()  # the reader of the terminal pipe is gone before the job's first line
    assert stopped.wait(timeout=600) == 130
    client, found = runs(tmp_path)
    by_job = {r.data.tags["sweep_job"]: r for r in found}
    assert sorted(by_job) == ["0", "1"], "the sweep went on after the signal"
    assert tags(by_job["0"]) == ("FINISHED", "true", "6", "6")
    assert tags(by_job["1"]) == ("KILLED", "false", "3", "6")  # stopped at step 3 of 6: never FINISHED
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1"]  # no job 2 started
    assert not (sweep / "1" / "FAILED").exists(), (sweep / "1" / "FAILED").read_text()
    assert ("lit_nash fit: stopped by SIGINT after step 3 of 6; checkpoint " f"{sweep}/1/checkpoints/last.ckpt. The sweep "
            "stopped here. Continue it as a whole (finished jobs are kept, this one resumes, the rest start) with: "
            f"python -m lit_nash fit -m resume={sweep}") in (sweep / "1" / "fit.log").read_text()
    finished = mlflow_snapshot(tmp_path)[by_job["0"].info.run_id]
    alone = run_cli("fit", f"resume={sweep}", cwd=tmp_path, env=ENV)  # without -m: one line that says how
    assert alone.returncode == 1 and alone.stderr.strip() == (
        f"lit_nash fit: resume={sweep} names a sweep's folder, which holds several runs: continue the sweep as a whole "
        f"with python -m lit_nash fit -m resume={sweep}, or one of its jobs with resume={sweep}/<job number>")

    out = run_cli("fit", "-m", f"resume={sweep}", cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"lit_nash fit: job 0 finished before the sweep stopped (step 6 of 6, MLflow run {by_job['0'].info.run_id}): " \
           "kept as it is" in out.stderr
    assert f"resuming from {sweep}/1/checkpoints/last.ckpt (MLflow run {by_job['1'].info.run_id})" in out.stderr
    client, found = runs(tmp_path)
    after = {r.data.tags["sweep_job"]: r for r in found}
    assert sorted(after) == ["0", "1", "2"] and len(found) == 3  # the stopped job went on in its own run
    assert mlflow_snapshot(tmp_path)[by_job["0"].info.run_id] == finished  # kept: not even its end time moved
    assert after["1"].info.run_id == by_job["1"].info.run_id and tags(after["1"]) == ("FINISHED", "true", "6", "6")
    assert tags(after["2"]) == ("FINISHED", "true", "6", "6")
    for job in "012":
        assert torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_a_run_stopped_early_without_a_signal_is_not_finished(tmp_path):
    """A callback that ends training early (an early-stopping rule, a time limit): the run ends KILLED with
    completed=false and its last step, never FINISHED."""
    out = run_cli("fit", "game=weighted_rps", "trainer.max_steps=6", *QUIET, "+callbacks.stop._target_=tests.faults.StopAt",
                  "+callbacks.stop.step=2", cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    _, (run,) = runs(tmp_path)
    assert tags(run) == ("KILLED", "false", "2", "6")


def test_two_call_rounding_is_said_once_and_the_run_is_finished_at_the_rounded_step(tmp_path):
    out = run_cli("fit", "game=weighted_rps", "rollout=sampled", "algo=egpo", "trainer.max_steps=3", *QUIET,
                  cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    note = ("lit_nash fit: algo=egpo takes 2 optimizer steps per iteration, so trainer.max_steps=3 is rounded up to 4: "
            "the last iteration completes (set trainer.max_steps=4 to say so yourself)")
    assert out.stderr.count(note) == 1, out.stderr[-3000:]
    _, (run,) = runs(tmp_path)
    assert tags(run) == ("FINISHED", "true", "4", "4")


def test_the_checkpoint_is_uploaded_before_the_run_is_finished(tmp_path):
    """SIGKILL while the checkpoint is being uploaded: the run is not FINISHED (it has no checkpoint artifact yet),
    and the half-written upload is removed when the run is resumed, which finishes it with its checkpoint."""
    out = run_cli("fit", "game=weighted_rps", "trainer.max_steps=4", *QUIET,
                  "+callbacks.fault._target_=tests.faults.KillDuringUpload", cwd=tmp_path, env=ENV)
    assert out.returncode == -9, out.stderr[-3000:]
    client, (run,) = runs(tmp_path)
    assert run.info.status == "RUNNING"  # what a SIGKILL leaves; never FINISHED without the checkpoint
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    (stale,) = artifacts.rglob(".artifact.uploading.*")
    assert "checkpoints/last.ckpt" not in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}

    resumed = run_cli("fit", f"resume={run.info.run_id}", *QUIET, cwd=tmp_path, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (f"lit_nash fit: removed 1 half-written upload(s) of MLflow run {run.info.run_id} that a killed process left: "
            f"checkpoints/{stale.name}") in resumed.stderr
    client, (run,) = runs(tmp_path)
    assert tags(run) == ("FINISHED", "true", "4", "4")
    assert not list(artifacts.rglob(".artifact.uploading.*"))
    (checkpoint,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    assert (artifacts / "checkpoints" / "last.ckpt").read_bytes() == checkpoint.read_bytes()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A finished single-process FSDP run on the token game: its checkpoint is a sharded folder."""
    root = tmp_path_factory.mktemp("sharded")
    out = run_cli("fit", "task=token_game", "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=1",
                  "trainer.precision=null", "trainer.max_steps=2", *QUIET, cwd=root, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    (folder,) = root.glob("outputs/*/*/checkpoints/last.ckpt")
    assert folder.is_dir() and (folder / "meta.pt").is_file()
    _, (run,) = runs(root)
    assert run.info.status == "FINISHED"
    return root, folder, run.info.run_id


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, resume_by, message", [
    (lambda f: truncate(f / "__0_0.distcp"), "run", "the shard '{folder}/__0_0.distcp' is truncated ("),
    (lambda f: (f / "__0_0.distcp").unlink(), "run", "the shard '{folder}/__0_0.distcp' is missing"),
    (lambda f: (f / "meta.pt").unlink(), "folder", "the sharded checkpoint folder '{folder}' has no meta.pt"),
    (lambda f: truncate(f / "meta.pt"), "run", "the file '{folder}/meta.pt' is truncated or damaged"),
], ids=["truncated_shard", "missing_shard", "no_meta", "truncated_meta"])
def test_a_damaged_checkpoint_is_refused_before_anything_and_the_run_keeps_its_status(sharded, damage, resume_by, message):
    root, folder, run_id = sharded
    kept = folder.with_name("kept")
    shutil.copytree(folder, kept)
    before = mlflow_snapshot(root)
    try:
        damage(folder)
        out = run_cli("fit", f"resume={run_id if resume_by == 'run' else folder}", *QUIET, cwd=root, env=ENV)
        assert out.returncode == 1
        line = out.stderr.strip()
        assert len(line.splitlines()) == 1 and line.startswith("lit_nash fit: resume="), out.stderr[-3000:]
        assert message.format(folder=folder) in line and "Nothing was touched" in line, line
        assert mlflow_snapshot(root) == before  # still FINISHED, with its end time: never reopened, never FAILED
    finally:
        shutil.rmtree(folder)
        kept.rename(folder)


def test_a_resume_that_fails_while_the_checkpoint_is_restored_leaves_the_run_as_it_was(tmp_path):
    """A checkpoint whose every file is whole, but whose state does not fit the model: the resume fails inside
    Lightning's restore, and the earlier run stays FINISHED with its end time (it used to become FAILED)."""
    first = run_cli("fit", "game=weighted_rps", "trainer.max_steps=2", *QUIET, cwd=tmp_path, env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    (path,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"].pop(next(iter(checkpoint["state_dict"])))
    torch.save(checkpoint, path)
    before = mlflow_snapshot(tmp_path)
    (run_id,) = before
    out = run_cli("fit", f"resume={run_id}", "trainer.max_steps=4", *QUIET, cwd=tmp_path, env=ENV)
    assert out.returncode != 0
    assert "Missing key(s) in state_dict" in out.stderr, out.stderr[-3000:]
    assert mlflow_snapshot(tmp_path) == before
