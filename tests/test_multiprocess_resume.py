"""Exact resume with two CPU processes (gloo), through the real CLI: a 2-process run stopped mid-run (SIGTERM
on both ranks, as a scheduler's preemption sends it) and continued with ``resume=`` ends with the same
parameters on every rank, the same snapshots, optimizer, algorithm and per-rank RNG states, and the same
logged metrics as the uninterrupted 2-process run. Every rank's generators are in the checkpoint
(``lit_nash.rng``), so no rank re-seeds on resume. DDP writes one file; the sharded path (FSDP2) writes a
sharded folder, atomically (``lit_nash.sharding``)."""

import mlflow
import pytest
import torch

from lit_nash.glossary import measures_the_machine
from tests.cli import REPO, run_cli, run_many

ENV = {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
STEPS, STOP = 8, 4
# MPO moves its magnet (a snapshot taken during training) every 3 steps: the checkpoint at step 4 holds it
COMMON = ["task=token_game", "algo=mpo", "algo.magnet_every=3", "rollout.prompts_per_step=2", f"trainer.max_steps={STEPS}",
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


def sharded_state(path, tmp):
    """A sharded folder's weights, snapshots and optimizer state, gathered into one dict (one process)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(path, tmp)
    return torch.load(tmp, weights_only=True)


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
                 for key in run.data.metrics if not measures_the_machine(key)}  # not system/*, not the wall time


def assert_same_run(full, resumed):
    """Parameters of every rank, snapshots, optimizer and LR schedule, the algorithm's state, every rank's
    generators at the end (so each rank drew the same samples), and the logged metrics."""
    for rank in (0, 1):
        assert_equal(params(full, rank), params(resumed, rank), f"rank {rank}'s parameters")
    a, b = read_checkpoint(last_checkpoint(full)), read_checkpoint(last_checkpoint(resumed))
    assert a["global_step"] == b["global_step"] == STEPS
    if last_checkpoint(full).is_dir():  # a sharded folder keeps the weights and the optimizer in its shards
        for side, cwd in ((a, full), (b, resumed)):
            side.update(sharded_state(last_checkpoint(cwd), cwd / "gathered.pt"))
        a["optimizer_states"], b["optimizer_states"] = [a.pop("optimizer_0")], [b.pop("optimizer_0")]
    assert any(".snapshots.entries.magnet." in key for key in a["state_dict"])
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_equal(a[key], b[key], key)
    mine = [k for k in a["callbacks"] if not k.startswith("LastCheckpoint")]  # not the checkpoint's own paths
    assert {"MPO", "RNGCheckpoint"} <= set(mine)
    for key in mine:
        assert_equal(a["callbacks"][key], b["callbacks"][key], f"callbacks[{key!r}]")
    ranks = a["callbacks"]["RNGCheckpoint"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])  # each rank its own stream
    run_a, metrics_a = metrics_by_step(full)
    run_b, metrics_b = metrics_by_step(resumed)
    assert run_b.info.status == "FINISHED" and metrics_a == metrics_b
    assert len(metrics_a["train/loss"]) == STEPS // 2 + 1  # every other step, and the first


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted 2-process run of each strategy (both at once: one torch thread per rank)."""
    folders = {strategy: tmp_path_factory.mktemp(f"full-{strategy}") for strategy in STRATEGIES}
    done = run_many(*[(fit_args(cwd, strategy), {"cwd": cwd, "env": ENV, "timeout": 600})
                      for strategy, cwd in folders.items()])
    for out in done:
        assert out.returncode == 0, out.stderr[-4000:]
    return folders


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_stopped_two_process_run_resumes_bit_identically(strategy, uninterrupted, tmp_path):
    out = run_cli(*fit_args(tmp_path, strategy, *STOP_AT), cwd=tmp_path, env=ENV, timeout=600)
    stopped = tmp_path
    assert out.returncode == 143, out.stderr[-4000:]
    assert f"stopped by SIGTERM after step {STOP}" in out.stderr
    path = last_checkpoint(stopped)
    assert path.is_dir() == (strategy == "fsdp")  # FSDP wrote a sharded folder
    saved = read_checkpoint(path)
    assert saved["global_step"] == STOP and len(saved["callbacks"]["RNGCheckpoint"]["ranks"]) == 2

    resumed = run_cli("fit", "resume=last", *dump(stopped), cwd=stopped, env=ENV, timeout=600)  # the run's own config
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from" in resumed.stderr
    assert_same_run(uninterrupted[strategy], stopped)


def test_a_sharded_save_that_fails_midway_leaves_the_previous_checkpoint_which_resumes(uninterrupted, tmp_path):
    """Checkpoints every 2 steps; the save at step 4 fails on rank 1 after it wrote its shard (Lightning then
    kills rank 0 mid-save). The step-2 folder is still there, complete, and resumes to the uninterrupted run."""
    out = run_cli(*fit_args(tmp_path, "fsdp", "checkpoint.every_n_steps=2", "+callbacks.fault.step=4",
                            "+callbacks.fault._target_=tests.faults.FailShardedSaveAt"),
                  cwd=tmp_path, env=ENV, timeout=600)
    assert out.returncode != 0 and "failed midway" in out.stderr, out.stderr[-4000:]
    path = last_checkpoint(tmp_path)
    assert read_checkpoint(path)["global_step"] == 2  # the previous checkpoint, not a mix of two
    (partial,) = path.parent.glob(".last.ckpt.tmp-*")  # the failed save's folder, beside it
    assert partial.is_dir()

    resumed = run_cli("fit", "resume=last", *dump(tmp_path), cwd=tmp_path, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "removed 1 temporary checkpoint file(s)" in resumed.stderr and not partial.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert_same_run(uninterrupted["fsdp"], tmp_path)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_sharded_folder_replaces_the_previous_one_and_a_killed_swap_is_undone(exchange, tmp_path, monkeypatch):
    """``replace_path`` swaps a complete folder in for the previous one, leaving nothing beside it. Where the
    filesystem cannot swap atomically it renames twice; a kill between the two renames leaves no
    ``last.ckpt`` but the previous one under ``.last.ckpt.old-<pid>``, which the next start (or resume)
    puts back, and a dead writer's temporary folder is removed."""
    import subprocess

    from lit_nash import checkpointing
    from lit_nash.checkpointing import find_checkpoint, remove_stale_temporaries, replace_path

    if not exchange:
        monkeypatch.setattr(checkpointing, "_exchange", lambda a, b: False)

    def folder(path, step):
        path.mkdir()
        torch.save({"global_step": step}, path / "meta.pt")
        (path / "__0_0.distcp").write_bytes(bytes([step]) * 100)
        return path

    last = folder(tmp_path / "last.ckpt", 2)
    replace_path(folder(tmp_path / ".last.ckpt.tmp-1", 4), last)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert read_checkpoint(last)["global_step"] == 4 and (last / "__0_0.distcp").read_bytes() == bytes([4]) * 100

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no process has any more
    last.rename(tmp_path / f".last.ckpt.old-{dead.pid}")  # killed between the two renames
    folder(tmp_path / f".last.ckpt.tmp-{dead.pid}", 6)  # ... or mid-write
    assert find_checkpoint(str(tmp_path), None, None) == last  # resume=<folder> puts it back
    assert read_checkpoint(last)["global_step"] == 4
    assert remove_stale_temporaries(tmp_path) == [tmp_path / f".last.ckpt.tmp-{dead.pid}"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
