"""Issue 23.1: a step scores each sampled response once. The loss's forward with grad and every snapshot's
log-probs run over the responses a rollout holds (k per prompt for all k(k − 1)/2 pairs), counted here in
the forward passes of a real tiny GPT-2; and a step's peak memory, measured by torch's memory profiler on
CPU, does not grow with the number of pairs trained at fixed k."""

import lightning as L
import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action

from lit_nash.algorithms import ALGORITHMS
from lit_nash.build import build_run
from lit_nash.games.token import token_game
from lit_nash.models import tiny_causal_lm
from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.rollout import Rollout, all_pairs

from .test_configs import compose_config


class ForwardCounter:
    """Sequences through the LM's input embeddings, by phase: a loss forward (grad on), a snapshot's
    log-probs (inside ``Rollouts.anchors``), and decoding or anything else."""

    def __init__(self, run):
        self.counts = {"grad": 0, "anchors": 0, "other": 0}
        self.in_anchors = False
        run.network.model.get_input_embeddings().register_forward_hook(self.hook)
        anchors = run.rollouts.anchors

        def counted_anchors(*args, **kwargs):  # the service's own method, with the phase marked
            self.in_anchors = True
            try:
                return anchors(*args, **kwargs)
            finally:
                self.in_anchors = False

        run.rollouts.anchors = counted_anchors

    def hook(self, module, args, output):
        phase = "grad" if torch.is_grad_enabled() else "anchors" if self.in_anchors else "other"
        self.counts[phase] += args[0].shape[0]

    def take(self):
        counts, self.counts = self.counts, {k: 0 for k in self.counts}
        return counts


class PerStep(L.Callback):
    """Each step's batch, what the rollout counted (it runs right before the step) and what the step counted."""

    def __init__(self, counter):
        self.counter, self.steps = counter, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rollout = self.counter.take()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((batch, self.rollout, self.counter.take()))


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_a_step_scores_each_response_once(name, tmp_path):
    """Every algorithm with its shipped defaults on the token game (a tiny GPT-2): per step, the loss forward
    with grad runs over the rollout's responses, each once, and each snapshot scores them once; the pair
    algorithms' k samples are all their responses (COMAL: 5 sequences for 10 pairs, where each pair's own rows
    took 20)."""
    cfg = compose_config("fit", ["task=token_game", f"algo={name}", f"output_dir={tmp_path}"])
    L.seed_everything(0, verbose=False)
    run = build_run(cfg)
    counter = ForwardCounter(run)
    per_step = PerStep(counter)
    steps = run.algorithm.steps_per_iteration(True)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[run.algorithm, per_step], accelerator="cpu")
    trainer.fit(run.policy, datamodule=run.data)
    assert len(per_step.steps) == steps
    for rollout, before, during in per_step.steps:
        N, m = rollout.responses.shape[:2]
        assert during["grad"] == N * m, (name, during)  # the loss scores each response once
        assert before["anchors"] == N * m * len(rollout.anchors), (name, before)
        sampled = sum(s.shape[1] for s in rollout.samples.values())
        assert m <= sampled  # never more responses than were sampled
        if getattr(run.algorithm, "pairs", None) == "all":  # every pair of k samples: k responses
            k = run.algorithm.k
            assert m == k and rollout.pairs.shape[1] == k * (k - 1) // 2 > k
    if name == "comal":
        rollout, _, during = per_step.steps[0]
        assert during["grad"] == 5 * len(rollout) and rollout.pairs.shape[1] == 10


# -- peak memory ------------------------------------------------------------------------------------------------
def peak_bytes(fn) -> int:
    """Peak bytes of the tensors ``fn`` allocates, from torch's memory profiler (CPU allocations by time)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    now = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            now += size
        elif action == Action.DESTROY:
            now -= size
        peak = max(peak, now)
    return peak


def test_peak_memory_of_a_step_does_not_grow_with_the_number_of_pairs(tmp_path):
    """k = 8 responses of 12 tokens to each of 4 prompts, scored by a tiny GPT-2 with INPO's pair loss, forward
    and backward: training all 28 pairs of each prompt peaks at the memory of training 7 of them (a chain), since
    both score the same 32 sequences. The layout where each pair is its own rows (prompt repeated per pair, the
    rollout before issue 23) grows with the pairs; the profiler sees that difference, so it would see a
    regression."""
    game = token_game()
    policy = CausalLMPolicy(str(tiny_causal_lm(tmp_path / "lm", game.vocabulary())), game=game, max_new_tokens=12)
    algo = ALGORITHMS["inpo"](k=8)
    N, k, T = 4, 8, 12
    g = torch.Generator().manual_seed(0)
    words = torch.tensor([i for i in range(policy.model.config.vocab_size) if i not in (policy.eos_id, policy.pad_id)])
    responses = words[torch.randint(len(words), (N, k, T), generator=g)]
    responses[..., -1] = policy.eos_id
    prompt = torch.arange(N)
    ref = policy.response_log_probs(prompt, responses, source="ref").detach()

    def step_of(rollout):
        def step():
            logp = policy.response_log_probs(rollout.prompt, rollout.responses)
            rollout.policy_logp = logp.detach()
            algo.loss(rollout, logp).backward()
        return step

    def by_index(pairs):  # the responses once, the pairs as indices
        c = pairs.shape[1]
        return Rollout(prompt=prompt, responses=responses, pairs=pairs, p=torch.rand(N, c, generator=g),
                       anchors={"ref": ref})

    def by_rows(pairs):  # each pair its own row: the prompt repeated, the pair's two responses copied
        c = pairs.shape[1]
        rows = prompt.repeat_interleave(c)
        pair = responses[prompt[:, None, None], pairs].flatten(0, 1)  # (N·c, 2, T)
        anchor = ref[prompt[:, None, None], pairs].flatten(0, 1)
        return Rollout(prompt=rows, responses=pair, pairs=torch.tensor([[[0, 1]]]).expand(N * c, 1, 2),
                       p=torch.rand(N * c, 1, generator=g), anchors={"ref": anchor})

    every = all_pairs(N, k)  # 28 per prompt
    chain = torch.stack([torch.arange(k - 1), torch.arange(1, k)], -1).expand(N, -1, -1)  # 7 per prompt
    peak = {(layout.__name__, c): peak_bytes(step_of(layout(pairs)))
            for layout in (by_index, by_rows) for c, pairs in ((7, chain), (28, every))}
    print(peak)
    assert peak["by_index", 28] <= 1.02 * peak["by_index", 7], peak  # the same 32 sequences
    assert peak["by_rows", 28] > 3 * peak["by_rows", 7], peak  # 224 vs 56 rows of two sequences
    assert peak["by_rows", 7] > peak["by_index", 28], peak
