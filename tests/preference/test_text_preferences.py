"""Text preference models (pairwise classifier, Bradley–Terry reward model, LLM judge) on tiny random models
built offline: probabilities in [0, 1], symmetric, batched, each with its own tokenizer, clear errors."""

import pytest
import torch
from transformers import AutoTokenizer

from lit_nash.models import build_tokenizer, tiny_causal_lm
from lit_nash.preference.judge import LLMJudge
from lit_nash.preference.pairwise import PairwiseClassifier
from lit_nash.preference.reward import BradleyTerryReward
from lit_nash.models import tiny_sequence_classifier

CONTENT = "hello world red blue green cat dog big small".split()
TEMPLATE = "Prompt Response Which response is better or Answer A B SEP [ ] : , ? first second".split()
WORDS = TEMPLATE + CONTENT
PROMPTS = ["hello", "red cat", "dog", "", "big small world"]
A = ["red", "blue dog green", "cat", "hello", "small"]
B = ["blue cat", "world", "cat dog red", "green", "small"]  # the last pair has a == b


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefs")
    return {
        "pairwise": str(tiny_sequence_classifier(root / "pairwise", WORDS, num_labels=2, seed=1)),
        "pairwise1": str(tiny_sequence_classifier(root / "pairwise1", WORDS, num_labels=1, seed=2)),
        "reward": str(tiny_sequence_classifier(root / "reward", WORDS, num_labels=1, seed=3)),
        "judge": str(tiny_causal_lm(root / "judge", WORDS, max_positions=128, seed=4)),
        "policy": str(tiny_causal_lm(root / "policy", CONTENT, seed=5)),
    }


KINDS = {
    "pairwise": (PairwiseClassifier, "pairwise"),
    "pairwise_1label": (PairwiseClassifier, "pairwise1"),
    "bradley_terry": (BradleyTerryReward, "reward"),
    "judge": (LLMJudge, "judge"),
}


@pytest.fixture(scope="module")
def prefs(paths):
    return {kind: cls(paths[key], batch_size=3) for kind, (cls, key) in KINDS.items()}


@pytest.mark.parametrize("kind", list(KINDS))
def test_probabilities_are_finite_in_unit_interval_and_symmetric(prefs, kind):
    pref = prefs[kind]
    p, q = pref.prob_text(PROMPTS, A, B), pref.prob_text(PROMPTS, B, A)
    assert p.shape == (len(PROMPTS),) and p.dtype == torch.float32 and p.device.type == "cpu"
    assert torch.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert (p + q - 1).abs().max() <= 1e-6
    assert (p[-1] - 0.5).abs() <= 1e-6  # a response against itself: a tie
    assert p.std() > 1e-4  # a real function of the text, not a constant


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_batched_call_equals_one_call_per_pair(prefs, kind):
    pref = prefs[kind]
    batched = pref.prob_text(PROMPTS, A, B)
    single = torch.cat([pref.prob_text([x], [y], [z]) for x, y, z in zip(PROMPTS, A, B)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert pref.prob_text([], [], []).shape == (0,)


def test_batched_means_few_forwards(paths):
    pref = PairwiseClassifier(paths["pairwise"], batch_size=4)
    calls = []
    pref.model.register_forward_hook(lambda m, i, o: calls.append(1))
    pref.prob_text(PROMPTS, A, B)  # 2 orders × 5 pairs = 10 sequences in chunks of 4
    assert len(calls) == 3


def test_reward_scores_each_distinct_response_once(paths):
    pref = BradleyTerryReward(paths["reward"], batch_size=64)
    seen = []
    pref.model.register_forward_hook(lambda m, a, kw, o: seen.append(kw["input_ids"].shape[0]), with_kwargs=True)
    prompts = ["hello"] * 4
    pref.prob_text(prompts, ["red", "red", "blue", "cat"], ["blue", "cat", "red", "red"])
    assert seen == [3]  # red, blue, cat: each scored once, in one forward
    r = pref.rewards(["hello", "hello"], ["red", "blue"])
    p = pref.prob_text(["hello"], ["red"], ["blue"])
    torch.testing.assert_close(p.double(), torch.sigmoid(r[0] - r[1]).reshape(1), atol=1e-6, rtol=0)


def test_preference_owns_its_tokenizer_and_template(paths, prefs):
    policy_tokenizer = AutoTokenizer.from_pretrained(paths["policy"])
    for pref in prefs.values():
        assert pref.tokenizer is not policy_tokenizer
        assert len(pref.tokenizer) == len(build_tokenizer(WORDS))  # the judge's vocabulary, not the policy's
    judge = prefs["judge"]
    assert judge.verdict_ids == judge.tokenizer.convert_tokens_to_ids(["A", "B"])
    text = judge.render("hello", a="red", b="blue")
    assert "red" in text and "blue" in text and text.rstrip().endswith(":")


def test_custom_template_and_chat_template(paths, tmp_path):
    judge = LLMJudge(paths["judge"], template="{prompt} first : {a} second : {b} Answer :", verdicts=["first", "second"])
    p, q = judge.prob_text(PROMPTS, A, B), judge.prob_text(PROMPTS, B, A)
    assert (p + q - 1).abs().max() <= 1e-6
    tok = AutoTokenizer.from_pretrained(paths["judge"])
    tok.chat_template = "{% for m in messages %}[ {{ m['content'] }} ] {% endfor %}{% if add_generation_prompt %}Answer :{% endif %}"
    tok.save_pretrained(tmp_path / "chat")
    chat = LLMJudge(paths["judge"], tokenizer_path=tmp_path / "chat", template="{a} , {b}")
    assert chat.render("x", a="red", b="blue") == "[ red , blue ] Answer :"
    plain = LLMJudge(paths["judge"], tokenizer_path=tmp_path / "chat", template="{a} , {b}", use_chat_template=False)
    assert plain.render("x", a="red", b="blue") == "red , blue"
    p = chat.prob_text(PROMPTS, A, B)
    assert ((p >= 0) & (p <= 1)).all()
    rm = BradleyTerryReward(paths["reward"], tokenizer_path=tmp_path / "chat")
    assert rm.render("hello", response="red") == "[ hello ] [ red ] "
    with pytest.raises(ValueError, match="template"):
        PairwiseClassifier(paths["pairwise"], template="{prompt} {response}")


def test_missing_path_raises_naming_it(paths, tmp_path):
    missing = tmp_path / "no_such_model"
    for cls in (PairwiseClassifier, BradleyTerryReward, LLMJudge):
        with pytest.raises(FileNotFoundError, match="no_such_model"):
            cls(missing)
    with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
        LLMJudge(paths["judge"], tokenizer_path=tmp_path / "no_such_tokenizer")


def test_verdicts_must_be_single_distinct_tokens(paths):
    with pytest.raises(ValueError, match="one known token"):
        LLMJudge(paths["judge"], verdicts=["A B", "B"])
    with pytest.raises(ValueError, match="one known token"):
        LLMJudge(paths["judge"], verdicts=["A", "zebra"])  # not in the vocabulary: [UNK]
    with pytest.raises(ValueError, match="same token"):
        LLMJudge(paths["judge"], verdicts=["A", "A"])
    with pytest.raises(ValueError, match="1"):
        BradleyTerryReward(paths["pairwise"])  # 2 labels is not a reward model


def test_model_is_frozen_and_pinned_device(paths):
    pref = PairwiseClassifier(paths["pairwise"], device="cpu")
    assert pref.model_device == torch.device("cpu")
    assert not any(p.requires_grad for p in pref.parameters())
    pref.train()
    p = pref.prob_text(PROMPTS, A, B)
    assert pref.model.training  # mode restored, and the scores were taken in eval mode
    torch.testing.assert_close(p, PairwiseClassifier(paths["pairwise"]).prob_text(PROMPTS, A, B))


def test_a_text_model_outside_the_unit_interval_is_refused_not_clamped(paths):
    """A subclass whose probabilities leave [0, 1] (a bug: e.g. an unnormalized score) stops labeling with an
    error that names the value and the pair; prob_text passes the value on unchanged."""
    from lit_nash.generation import HFGenerator, SamplingGroup
    from lit_nash.guards import NumericalError
    from lit_nash.policy.causal_lm import CausalLMPolicy
    from lit_nash.rollout import label

    class Overconfident(BradleyTerryReward):
        def _prob(self, prompts, a, b):
            return 3 * super()._prob(prompts, a, b)

    pref = Overconfident(paths["reward"])
    assert pref.prob_text(PROMPTS, A, B).max() > 1  # unchanged, not clamped
    policy = CausalLMPolicy(paths["policy"], prompts=PROMPTS[:2], max_new_tokens=3)
    torch.manual_seed(0)
    a, b = (HFGenerator(policy).generate(torch.arange(2), [SamplingGroup(k=4)])[0].responses for _ in range(2))
    with pytest.raises(NumericalError, match=r"preference model returned .* probabilities must be finite and in \[0, 1\]"):
        label(pref, torch.arange(2), a, b, reader=policy)
