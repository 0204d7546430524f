"""Crash safety, exact resume and numerical guards, through the real CLI, MLflow store and checkpoints.

* a run killed with SIGKILL in the middle of a (seeded) random step and continued with ``resume=last``
  ends with the same parameters, snapshots and logged metrics as an uninterrupted run, in the same MLflow run;
* SIGTERM and SIGINT finish the step, write the checkpoint, mark the run KILLED and exit 128 + signal;
* a NaN from the preference model or in the weights stops the run with a message naming the quantity,
  the algorithm and the step; the MLflow run is FAILED and the last good checkpoint is untouched;
* a half-written checkpoint never replaces a good one.
"""

import hashlib
import random

import mlflow
import pytest
import torch

from lit_nash.checkpointing import AtomicCheckpointIO
from lit_nash.glossary import measures_the_machine
from tests.cli import REPO, run_cli, run_many

ENV = {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
QUIET = ["trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
# sampled play on a 5-action random game, mid-schedule everywhere: MPO's magnet and COMAL's prox center move
# every 3 steps, EGPO takes two optimizer steps per iteration (its extragradient half step and full step)
RUNS = {
    "mpo": ["game=egpo_random", "rollout=sampled", "algo=mpo", "algo.magnet_every=3", "policy.optimizer._target_=torch.optim.Adam", "policy.optimizer.lr=0.05"],
    "egpo": ["game=egpo_random", "rollout=sampled", "algo=egpo", "policy.optimizer._target_=torch.optim.Adam", "policy.optimizer.lr=0.05"],
    "comal": ["game=egpo_random", "rollout=sampled", "algo=comal", "algo.reset_every=3", "rollout.epochs_per_round=2"],
    "nash_md_lm": ["task=token_game", "algo=nash_md", "policy.optimizer.lr=0.01"],
}


def fit(cwd, *overrides, env=ENV):
    return run_cli("fit", *overrides, *QUIET, cwd=cwd, env=env)


def fit_both(*runs):
    """Several (cwd, overrides) fits side by side (one torch thread each)."""
    return run_many(*[(("fit", *overrides, *QUIET), {"cwd": cwd, "env": ENV}) for cwd, overrides in runs])


def last_checkpoint(cwd):
    (path,) = cwd.glob("outputs/*/*/checkpoints/last.ckpt")
    return path


def runs_of(cwd):
    client = mlflow.MlflowClient(f"sqlite:///{cwd}/mlruns.db")
    return client, client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])


def metrics_by_step(client, run):
    """Every metric's history as {step: value}; a resumed run logs the steps after its checkpoint again,
    with the same values, so the last value per step is the run's record. What measures the machine (MLflow's
    system/* samples, the wall time) is no part of the run's result."""
    return {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)} for key in run.data.metrics
            if not measures_the_machine(key)}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(name, tmp_path):
    steps = 8 if name == "nash_md_lm" else 14
    kill_at = random.Random(f"kill-{name}").randint(2, steps - 1)  # seeded: the same step on every machine
    full, broken = tmp_path / "full", tmp_path / "broken"
    full.mkdir(), broken.mkdir()
    done, killed = fit_both(
        (full, [*RUNS[name], f"trainer.max_steps={steps}"]),
        (broken, [*RUNS[name], f"trainer.max_steps={steps}", "checkpoint.every_n_steps=2",
                  "+callbacks.fault._target_=tests.faults.KillAt", f"+callbacks.fault.step={kill_at}"]),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert killed.returncode == -9, killed.stderr[-3000:]
    saved = torch.load(last_checkpoint(broken), weights_only=True)
    assert saved["global_step"] < kill_at  # the last complete checkpoint, from before the kill
    client, (run,) = runs_of(broken)
    assert run.info.status == "RUNNING"  # nothing could mark it: the process died on the spot

    resumed = fit(broken, "resume=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"MLflow run {run.info.run_id}" in resumed.stdout  # the same run, continued

    a = torch.load(last_checkpoint(full), weights_only=True)
    b = torch.load(last_checkpoint(broken), weights_only=True)
    assert a["global_step"] == b["global_step"] == steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), key
    assert a["optimizer_states"][0]["state"].keys() == b["optimizer_states"][0]["state"].keys()
    client_a, (run_a,) = runs_of(full)
    client_b, (run_b,) = runs_of(broken)
    assert run_b.info.status == "FINISHED" and run_b.info.run_id == run.info.run_id
    assert metrics_by_step(client_b, run_b) == metrics_by_step(client_a, run_a)


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_sigint_stop_cleanly_with_a_checkpoint_then_resume(sig, code, tmp_path):
    overrides = [*RUNS["mpo"], "checkpoint.every_n_steps=100"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    full.mkdir(), stopped.mkdir()
    done, out = fit_both(
        (full, [*overrides, "trainer.max_steps=12"]),
        (stopped, [*overrides, "trainer.max_steps=12", "+callbacks.fault._target_=tests.faults.KillAt",
                   "+callbacks.fault.step=5", f"+callbacks.fault.sig={sig}"]),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.returncode == code, out.stderr[-3000:]
    assert f"stopped by {sig} after step 5" in out.stderr and "resume=" in out.stderr
    assert torch.load(last_checkpoint(stopped), weights_only=True)["global_step"] == 5  # the step finished
    client, (run,) = runs_of(stopped)
    assert run.info.status == "KILLED"
    assert fit(stopped, f"resume={run.info.run_id}").returncode == 0  # by run id this time
    a = torch.load(last_checkpoint(full), weights_only=True)["state_dict"]
    b = torch.load(last_checkpoint(stopped), weights_only=True)["state_dict"]
    assert all(torch.equal(b[k], v) for k, v in a.items())


@pytest.mark.parametrize("fault, quantity", [
    (["preference._target_=tests.faults.NaNGameOracle", "+preference.nan_at_call=7"], "preference model returned nan"),
    (["+callbacks.fault._target_=tests.faults.PoisonAt", "+callbacks.fault.step=7"], "non-finite log-probs of 'policy'"),
])
def test_a_nan_stops_the_run_names_it_and_keeps_the_last_good_checkpoint(fault, quantity, tmp_path):
    out = fit(tmp_path, *RUNS["mpo"], "trainer.max_steps=12", "checkpoint.every_n_steps=2", *fault)
    assert out.returncode != 0
    assert quantity in out.stderr and "algo=mpo, optimizer step 7" in out.stderr, out.stderr[-3000:]
    assert "last good checkpoint is kept" in out.stderr
    ckpt = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert ckpt["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    client, (run,) = runs_of(tmp_path)
    assert run.info.status == "FAILED"
    assert fit(tmp_path, "resume=last", "trainer.max_steps=8").returncode == 0  # the kept checkpoint resumes


def test_a_failed_write_never_replaces_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    def dies_mid_write(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    assert torch.load(path, weights_only=True)["step"] == 1
