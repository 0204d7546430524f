"""The vLLM generator under two CPU training processes (gloo), through the real CLI: ``fit generator=vllm
trainer=ddp trainer.devices=2`` and the same with ``trainer=fsdp``, one engine per rank (eager, a tiny Llama in
fp32). After training, each rank's engine, given the trained weights by a push (gathered from the shards under
FSDP2), decodes greedily what the training model decodes; the two ranks' samples differ; the run logged a
generator/training log-prob gap at float round-off. A run whose pushes leave out a layer on one rank stops
at the first push after a step, naming that rank and its gap. A 2-process vLLM run stopped mid-run and resumed
ends exactly as the uninterrupted run (``slow``: three more 2-process runs). Skipped where vLLM cannot run."""

import pytest
import torch

from lit_nash.games.token import token_game
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy
from tests.cli import REPO, run_cli, run_many
from tests.generation.test_vllm import MISSING
from tests.policy.test_causal_lm import train
from tests.test_multiprocess_resume import assert_equal, last_checkpoint, metrics_by_step

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

GAME = token_game()
ENV = {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
STEPS = 4
STRATEGIES = {
    "ddp": ["trainer=ddp", "trainer.devices=2"],
    "fsdp": ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=null"],
}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny Llama trained a few steps toward the token game's responses, so that sampled play has losses and
    gradients from the first step (a random one puts 97% of its mass on invalid responses, all tied at ½)."""
    root = tmp_path_factory.mktemp("llama")
    policy = CausalLMPolicy(str(tiny_causal_lm(root / "init", GAME.vocabulary(), arch="llama")), game=GAME)
    train(policy, steps=8, lr=0.05)
    policy.model.save_pretrained(root / "warm")
    policy.tokenizer.save_pretrained(root / "warm")
    return str(root / "warm")


def fit_args(llama, cwd, strategy, *extra):
    return ("fit", "task=token_game", "algo=egpo", "generator=vllm", "generator.enforce_eager=true",
            "generator.kv_cache_gib=0.0625", f"policy.model_path={llama}", "rollout.prompts_per_step=2",
            f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
            "policy.optimizer.lr=0.01", *STRATEGIES[strategy],
            "+callbacks.dump._target_=tests.rank_params.SaveParams", f"+callbacks.dump.path={cwd}/params",
            "+callbacks.samples._target_=tests.rank_params.SaveGeneratorSamples", f"+callbacks.samples.path={cwd}/params",
            *extra)


@pytest.fixture(scope="module")
def runs(llama, tmp_path_factory):
    folders = {strategy: tmp_path_factory.mktemp(strategy) for strategy in STRATEGIES}
    done = run_many(*[(fit_args(llama, cwd, strategy), {"cwd": cwd, "env": ENV, "timeout": 900})
                      for strategy, cwd in folders.items()])
    for out in done:
        assert out.returncode == 0, out.stderr[-4000:]
    return folders


def saved(cwd, kind, rank):
    return torch.load(cwd / "params" / f"{kind}{rank}.pt", weights_only=True)


def hf_greedy(llama, params=None):
    """The training model's own greedy decoding (transformers' ``generate``) of every prompt, with ``params``
    (a rank's full parameters, as ``SaveParams`` wrote them) or the starting weights."""
    policy = CausalLMPolicy(llama, game=GAME)
    if params is not None:
        prefix = "network.model."
        policy.model.load_state_dict({k[len(prefix):]: v for k, v in params.items()})
    ids, mask = policy.codec.prompt_batch(torch.arange(GAME.num_prompts), 1, "cpu")
    with torch.no_grad():
        out = policy.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=policy.max_new_tokens,
                                    do_sample=False, eos_token_id=policy.eos_id, pad_token_id=policy.pad_id)
    return out[:, ids.shape[1]:]


def same(a, b):
    T = min(a.shape[-1], b.shape[-1])  # transformers pads finished rows too; compare the common width
    return torch.equal(a[..., :T], b[..., :T])


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_after_a_push_every_ranks_engine_decodes_as_the_training_model(llama, runs, strategy):
    before = hf_greedy(llama)
    for rank in (0, 1):
        params, samples = saved(runs[strategy], "rank", rank), saved(runs[strategy], "samples", rank)
        after = hf_greedy(llama, params)
        assert not torch.equal(after, before)  # training changed the greedy outputs: the test can tell a stale push
        assert same(samples["greedy"][:, 0], after), (rank, samples["greedy"][:, 0], after)
        assert samples["pushes"] > STEPS  # the policy after every step, EGPO's half steps, the last weights
    assert_equal(saved(runs[strategy], "rank", 0), saved(runs[strategy], "rank", 1), "the ranks' parameters")


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_the_ranks_sample_differently_and_the_gap_is_round_off(runs, strategy):
    a, b = saved(runs[strategy], "samples", 0)["sampled"], saved(runs[strategy], "samples", 1)["sampled"]
    assert a.shape == b.shape and not torch.equal(a, b)  # the same prompts, each rank its own seeds
    _, metrics = metrics_by_step(runs[strategy])
    gaps = metrics["train/generator_logprob_gap"]
    assert len(gaps) >= STEPS // 2 and all(0 <= g < 1e-4 for g in gaps.values()), gaps


def test_a_push_that_skips_a_layer_on_one_rank_stops_the_run_naming_it(llama, tmp_path):
    """Rank 1's pushes leave out layer 1, so after the first optimizer step its engine samples from a layer the
    training model no longer has; the check after that push stops the run on every rank, naming rank 1."""
    out = run_cli(*fit_args(llama, tmp_path, "ddp", "+callbacks.fault._target_=tests.faults.SkipLayerInPush",
                            "+callbacks.fault.layer=1", "+callbacks.fault.rank=1"),
                  cwd=tmp_path, env=ENV, timeout=900)
    assert out.returncode != 0
    assert "generator=vllm sampled from weights that are not the policy's" in out.stderr, out.stderr[-4000:]
    message = next(line for line in out.stderr.splitlines() if "sampled from weights" in line)
    assert "rank 1: " in message and "rank 0: " not in message and "float32 bound 0.0001" in message, message


@pytest.mark.slow
def test_a_stopped_two_process_vllm_run_resumes_exactly(llama, runs, tmp_path):
    """As with the hf generator (tests/test_multiprocess_resume.py): stopped by SIGTERM after step 2, resumed
    with new engines (built from the model folder, then given the checkpoint's weights by their first push),
    every rank ends with the uninterrupted run's parameters, RNG states and logged metrics."""
    stop = ["+callbacks.fault._target_=tests.faults.KillAt", "+callbacks.fault.step=2", "+callbacks.fault.sig=SIGTERM"]
    out = run_cli(*fit_args(llama, tmp_path, "ddp", *stop), cwd=tmp_path, env=ENV, timeout=900)
    assert out.returncode == 143, out.stderr[-4000:]
    dump = fit_args(llama, tmp_path, "ddp")[-4:]
    resumed = run_cli("fit", "resume=last", *dump, cwd=tmp_path, env=ENV, timeout=900)
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr[-4000:]
    full = runs["ddp"]
    for rank in (0, 1):
        assert_equal(saved(full, "rank", rank), saved(tmp_path, "rank", rank), f"rank {rank}'s parameters")
        assert_equal(saved(full, "samples", rank), saved(tmp_path, "samples", rank) | {"pushes": saved(full, "samples", rank)["pushes"]})
    a, b = (torch.load(last_checkpoint(cwd), map_location="cpu", weights_only=True) for cwd in (full, tmp_path))
    assert_equal(a["callbacks"]["RNGCheckpoint"], b["callbacks"]["RNGCheckpoint"], "RNG states")
    assert metrics_by_step(full)[1] == metrics_by_step(tmp_path)[1]
