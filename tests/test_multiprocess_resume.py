"""Exact resume with two CPU processes (gloo), through the real CLI: a 2-process run stopped mid-run (SIGTERM
on both ranks, as a scheduler's preemption sends it) and continued with ``resume=`` ends with the same
parameters on every rank, the same snapshots, optimizer, algorithm and per-rank RNG states, and the same
logged metrics as the uninterrupted 2-process run. Every rank's generators are in the checkpoint
(``lit_nash.rng``), so no rank re-seeds on resume. DDP writes one file; the sharded path (FSDP2) writes a
sharded folder, atomically (``lit_nash.sharding``)."""

import mlflow
import pytest
import torch

from tests.cli import REPO, run_cli, run_many

ENV = {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
STEPS, STOP = 8, 4
COMMON = ["task=token_game", "algo=egpo", "rollout.prompts_per_step=2", f"trainer.max_steps={STEPS}",
          "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false", "policy.optimizer.lr=0.01",
          "policy.warmup_steps=3"]
STRATEGIES = {
    "ddp": ["trainer=ddp", "trainer.devices=2"],
    "fsdp": ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=null"],
}
STOP_AT = ["+callbacks.fault._target_=tests.faults.KillAt", f"+callbacks.fault.step={STOP}", "+callbacks.fault.sig=SIGTERM"]


def dump(cwd):
    """Every rank writes its parameters at the end (a user's callback: a resume takes it from the command)."""
    return ["+callbacks.dump._target_=tests.rank_params.SaveParams", f"+callbacks.dump.path={cwd}/params"]


def fit_args(cwd, strategy, *extra):
    return ("fit", *COMMON, *STRATEGIES[strategy], *dump(cwd), *extra)


def last_checkpoint(cwd):
    (path,) = cwd.glob("outputs/*/*/checkpoints/last.ckpt")
    return path


def read_checkpoint(path):
    """A checkpoint's non-sharded part: the file, or a sharded folder's metadata (its shards hold the
    weights and optimizer state, compared through the ranks' parameters)."""
    return torch.load(path / "meta.pt" if path.is_dir() else path, map_location="cpu", weights_only=True)


def params(cwd, rank):
    return torch.load(cwd / "params" / f"rank{rank}.pt", weights_only=True)


def assert_equal(a, b, where="checkpoint"):
    """Nested dicts, lists and tuples of tensors and plain values, bit for bit."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, set(a) ^ set(b))
        for key in a:
            assert_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def metrics_by_step(cwd):
    client = mlflow.MlflowClient(f"sqlite:///{cwd}/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lit_nash").experiment_id])
    return run, {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
                 for key in run.data.metrics}


def assert_same_run(full, resumed):
    """Parameters of every rank, snapshots, optimizer and LR schedule, the algorithm's state, every rank's
    generators at the end (so each rank drew the same samples), and the logged metrics."""
    for rank in (0, 1):
        assert_equal(params(full, rank), params(resumed, rank), f"rank {rank}'s parameters")
    a, b = read_checkpoint(last_checkpoint(full)), read_checkpoint(last_checkpoint(resumed))
    assert a["global_step"] == b["global_step"] == STEPS
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        if key in a or key in b:  # a sharded folder keeps the first two in its shards
            assert_equal(a[key], b[key], key)
    mine = [k for k in a["callbacks"] if not k.startswith("LastCheckpoint")]  # not the checkpoint's own paths
    assert {"EGPO", "RNGCheckpoint"} <= set(mine)
    for key in mine:
        assert_equal(a["callbacks"][key], b["callbacks"][key], f"callbacks[{key!r}]")
    ranks = a["callbacks"]["RNGCheckpoint"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])  # each rank its own stream
    run_a, metrics_a = metrics_by_step(full)
    run_b, metrics_b = metrics_by_step(resumed)
    assert run_b.info.status == "FINISHED" and metrics_a == metrics_b
    assert len(metrics_a["train/loss"]) == STEPS // 2


@pytest.mark.parametrize("strategy", ["ddp"])
def test_a_stopped_two_process_run_resumes_bit_identically(strategy, tmp_path):
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    full.mkdir(), stopped.mkdir()
    done, out = run_many((fit_args(full, strategy), {"cwd": full, "env": ENV, "timeout": 600}),
                         (fit_args(stopped, strategy, *STOP_AT), {"cwd": stopped, "env": ENV, "timeout": 600}))
    assert done.returncode == 0, done.stderr[-4000:]
    assert out.returncode == 143, out.stderr[-4000:]
    assert f"stopped by SIGTERM after step {STOP}" in out.stderr
    path = last_checkpoint(stopped)
    assert path.is_dir() == (strategy == "fsdp")  # FSDP wrote a sharded folder
    saved = read_checkpoint(path)
    assert saved["global_step"] == STOP and len(saved["callbacks"]["RNGCheckpoint"]["ranks"]) == 2

    resumed = run_cli("fit", "resume=last", *dump(stopped), cwd=stopped, env=ENV, timeout=600)  # the run's own config
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from" in resumed.stderr
    assert_same_run(full, stopped)
