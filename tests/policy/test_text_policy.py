"""The causal-LM policy on real text: chat templates for conversations and plain prompts, responses decoded
for a text preference model (which re-encodes them with its own tokenizer), and gradient accumulation that
equals the full batch."""

from functools import partial

import lightning as L
import pytest
import torch
from transformers import AutoTokenizer

from lit_nash.algorithms import ALGORITHMS
from lit_nash.build import assemble
from lit_nash.engine import PolicyModule, RolloutDataModule
from lit_nash.generation import HFGenerator, SamplingGroup
from lit_nash.models import tiny_causal_lm, tiny_sequence_classifier
from lit_nash.policy.causal_lm import CausalLMPolicy
from lit_nash.preference import PairwiseClassifier
from lit_nash.rollout import label

WORDS = "user assistant system : hello name a colour red blue green cat dog big small count to three".split()
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)
PLAIN = ["name a colour", "count to three", "hello", "big cat small dog"]
CHAT = [[{"role": "system", "content": "hello"}, {"role": "user", "content": "name a colour"}]]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    plain = tiny_causal_lm(root / "plain", WORDS, seed=1)
    chat = tiny_causal_lm(root / "chat", WORDS, arch="llama", seed=2)
    tok = AutoTokenizer.from_pretrained(str(chat))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(chat))
    return {"plain": str(plain), "chat": str(chat),
            "pairwise": str(tiny_sequence_classifier(root / "pairwise", WORDS + ["[", "SEP", "]"], seed=3))}


def sample(policy, prompt, k):
    return HFGenerator(policy).generate(prompt, [SamplingGroup(k=k)])[0].responses


def words(policy, ids):
    return policy.tokenizer.convert_ids_to_tokens(ids)


def test_conversations_and_plain_prompts_go_through_the_chat_template(paths):
    policy = CausalLMPolicy(paths["chat"], prompts=PLAIN[:1] + CHAT)
    assert policy.codec.chat  # the tokenizer has a template: plain prompts become one user turn
    assert words(policy, policy.codec.prompt_tokens(0)) == "user : name a colour assistant :".split()
    assert words(policy, policy.codec.prompt_tokens(1)) == "system : hello user : name a colour assistant :".split()
    raw = CausalLMPolicy(paths["chat"], prompts=PLAIN[:1], use_chat_template=False)
    assert words(raw, raw.codec.prompt_tokens(0)) == "[BOS] name a colour".split()
    short = CausalLMPolicy(paths["chat"], prompts=CHAT, max_prompt_tokens=4)
    assert words(short, short.codec.prompt_tokens(0)) == "a colour assistant :".split()  # the end is kept


def test_a_tokenizer_without_chat_template_is_refused_for_conversations(paths):
    with pytest.raises(ValueError, match="the prompts are conversations but the tokenizer of .* has no chat template"):
        CausalLMPolicy(paths["plain"], prompts=CHAT)
    with pytest.raises(ValueError, match="use_chat_template is true but the tokenizer of .* has no chat template"):
        CausalLMPolicy(paths["plain"], prompts=PLAIN, use_chat_template=True)


def test_prompts_of_different_lengths_are_left_padded_per_batch(paths):
    policy = CausalLMPolicy(paths["plain"], prompts=PLAIN, max_new_tokens=5)
    ids, mask = policy.codec.prompt_batch(torch.tensor([2, 3]), 2, policy.device)
    assert ids.shape == (4, 5) and mask.sum(-1).tolist() == [2, 2, 5, 5]  # padded to the longer of these two
    torch.manual_seed(0)
    alone = sample(policy, torch.tensor([2]), 3)
    lp_alone = policy.response_log_probs(torch.tensor([2]), alone)
    # the padding does not change a prompt's response log-probs
    pair = policy.response_log_probs(torch.tensor([2, 3]), torch.cat([alone, alone]))
    torch.testing.assert_close(pair[0], lp_alone[0], atol=1e-5, rtol=0)


def test_a_text_preference_reads_what_the_policy_wrote(paths):
    pref = PairwiseClassifier(paths["pairwise"])
    policy = CausalLMPolicy(paths["chat"], prompts=PLAIN[:1] + CHAT, max_new_tokens=6)
    run = assemble(policy, ALGORITHMS["online_ipo"](k=2, variant=2), pref)
    assert "preference" not in dict(run.policy.named_children())  # not in the policy's checkpoint
    torch.manual_seed(0)
    prompt = torch.tensor([0, 1])
    a, b = sample(policy, prompt, 3), sample(policy, prompt, 3)
    p = label(pref, prompt, a, b, reader=policy)
    assert p.shape == (2, 3) and ((p >= 0) & (p <= 1)).all()
    texts = [policy.prompt_text(i) for i in (0, 0, 0, 1, 1, 1)]
    assert texts[0] == "name a colour" and texts[3] == "system: hello\nuser: name a colour"
    expected = pref.prob_text(texts, policy.decode(a), policy.decode(b)).view(2, 3)
    torch.testing.assert_close(p, expected)
    assert all("[EOS]" not in t and "[PAD]" not in t for t in policy.decode(a))
    torch.testing.assert_close(label(pref, prompt, b, a, reader=policy), 1 - p, atol=1e-6, rtol=0)
    torch.testing.assert_close(run.rollouts.label(prompt, a, b), p)  # the rollout service labels the same way


def run(paths, algo_name, micro_batches, steps=3, epochs_per_round=1):
    L.seed_everything(0, verbose=False)
    algo = ALGORITHMS[algo_name](k=2) if algo_name != "online_ipo" else ALGORITHMS[algo_name](k=2, variant=2)
    pref = PairwiseClassifier(paths["pairwise"])
    policy = CausalLMPolicy(paths["plain"], prompts=PLAIN, max_new_tokens=5)
    run = assemble(policy, algo, pref, RolloutDataModule(len(PLAIN), prompts_per_step=4, epochs_per_round=epochs_per_round),
                   optimizer=partial(torch.optim.SGD, lr=0.5, weight_decay=0.0), micro_batches=micro_batches)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[algo], accelerator="cpu")
    trainer.fit(run.policy, datamodule=run.data)
    return {n: p.detach().clone() for n, p in policy.named_parameters()}


@pytest.mark.parametrize("algo, epochs_per_round", [("online_ipo", 1), ("inpo", 2)])
def test_accumulating_two_micro_batches_equals_the_full_batch(paths, algo, epochs_per_round):
    """micro_batches=2 (two backward passes over 2 prompts each) vs one pass over all 4: same samples, same
    parameters after 3 SGD steps up to float32 summation order (1e-6 per unit the parameters moved: INPO's
    rounds at lr 0.5 move some by 14, and its measured difference was 3.8e-6; SGD, because Adam's first steps divide
    by the gradient's own magnitude and blow rounding up on near-zero gradients); INPO's rounds keep π_t's log-probs from
    the first epoch, gathered back from the micro-batches."""
    full = run(paths, algo, 1, epochs_per_round=epochs_per_round)
    accumulated = run(paths, algo, 2, epochs_per_round=epochs_per_round)
    start = CausalLMPolicy(paths["plain"], prompts=PLAIN)
    moved = max((full[n] - p).abs().max().item() for n, p in start.named_parameters())
    assert moved > 1e-3  # the steps did something
    for name, value in full.items():
        torch.testing.assert_close(accumulated[name], value, atol=1e-6 * max(1.0, moved), rtol=1e-5, msg=name)


class GradNorms(L.Callback):
    def __init__(self):
        self.norms = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())


def test_warmup_weight_decay_and_gradient_clipping(paths):
    """warmup_steps=4: after 2 optimizer steps the learning rate is 3/4 of lr (linear, then constant);
    grad_clip bounds the global gradient norm the optimizer sees."""
    algo = ALGORITHMS["online_ipo"](k=2, variant=2)
    policy = CausalLMPolicy(paths["plain"], prompts=PLAIN, max_new_tokens=5)
    run = assemble(policy, algo, PairwiseClassifier(paths["pairwise"]), RolloutDataModule(len(PLAIN), prompts_per_step=4),
                   optimizer=partial(torch.optim.AdamW, lr=0.1, weight_decay=0.01), warmup_steps=4, grad_clip=1e-3)
    norms = GradNorms()
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[algo, norms], accelerator="cpu")
    trainer.fit(run.policy, datamodule=run.data)
    group = run.policy.optimizers().optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.075) and group["weight_decay"] == 0.01
    assert len(norms.norms) == 2 and max(norms.norms) <= 1e-3 * (1 + 1e-4)
    with pytest.raises(ValueError, match="grad_clip must be > 0 or null, got 0"):  # the training settings are the module's
        PolicyModule(policy, algo, grad_clip=0)
