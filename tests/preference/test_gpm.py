"""The general preference model (GPM): skew-symmetric by construction, one encoder pass per distinct response,
and able to fit COMAL's 3-cycle from sampled labels where a Bradley–Terry model cannot; both trained end to end
with ``python -m lit_nash train_preference`` on a tiny random-init GPT-2.

The cyclic data: three actions (COMAL's game, P = [[.5, .1, .8], [.9, .5, .1], [.2, .9, .5]]), each written
as 1–3 words from its own four words; a pair's label is drawn from P of the two actions. The held-out
responses are never trained on, and the held-out pairs are every pair of them across two actions (equally many
of each action pair), so a transitive order, any Bradley–Terry model's, ranks at most 2/3 of them the way the
majority of labels goes (each cross-action triple (a, b, c) is ordered the cyclic way on at most 2 of its 3 pairs).
"""

import json
import random

import pytest
import torch
from mlflow import MlflowClient

from lit_nash.games import comal_cycle
from lit_nash.models import tiny_sequence_classifier
from lit_nash.preference import BradleyTerryReward, GeneralPreferenceModel
from lit_nash.preference.gpm import save_new, skew_score
from lit_nash.rollout import Rollouts

from ..cli import run_many

ACTIONS = ["sun gold rose kind".split(), "rain mud dust cold".split(), "cat dog fox owl".split()]
PROMPTS = "tell write say give".split()
WORDS = [w for words in ACTIONS for w in words] + PROMPTS
P = comal_cycle().P[0].tolist()
FAST = ["trainer.enable_progress_bar=false", "train.batch_size=32", "train.lr=1e-3", "trainer.val_check_interval=1000",
        "trainer.max_steps=300"]


def responses(rng: random.Random) -> list[list[str]]:
    """Every response of each action: 1–3 of its words, in order with repetition (84 per action)."""
    out = []
    for words in ACTIONS:
        rows = [[w] for w in words] + [[u, v] for u in words for v in words] + [[u, v, w] for u in words for v in words for w in words]
        out.append([" ".join(r) for r in rows])
    return out


def split(seed: int = 0):
    """(train responses, held-out responses) per action: 6 of each action's 84 held out."""
    rng = random.Random(seed)
    train, held = [], []
    for texts in responses(rng):
        texts = texts[:]
        rng.shuffle(texts)
        held.append(texts[:6])
        train.append(texts[6:])
    return train, held


def draw(rng, i, j, a, b):
    return {"prompt": rng.choice(PROMPTS), "a": a, "b": b, "label": float(rng.random() < P[i][j]), "i": i, "j": j}


def cyclic_data(n_train: int = 3000, seed: int = 0):
    rng = random.Random(seed)
    train_texts, held_texts = split(seed)
    train = []
    while len(train) < n_train:
        i, j = rng.sample(range(3), 2)
        train.append(draw(rng, i, j, rng.choice(train_texts[i]), rng.choice(train_texts[j])))
    held = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        for a in held_texts[i]:
            for b in held_texts[j]:
                held.append(draw(rng, i, j, a, b) if rng.random() < 0.5 else draw(rng, j, i, b, a))
    return train, held


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps({k: r[k] for k in ("prompt", "a", "b", "label")}) + "\n" for r in rows))
    return str(path)


def majority_accuracy(pref, rows) -> float:
    """Share of pairs ranked the way the majority of labels goes (P[i][j] > ½)."""
    p = pref.prob_text([r["prompt"] for r in rows], [r["a"] for r in rows], [r["b"] for r in rows])
    right = [(float(q) > 0.5) == (P[r["i"]][r["j"]] > 0.5) for q, r in zip(p, rows)]
    return sum(right) / len(right)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 1-label GPT-2 classifier: the Bradley–Terry model starts from it, the GPM puts its own head on it."""
    return tiny_sequence_classifier(tmp_path_factory.mktemp("base") / "base", WORDS, num_labels=1, seed=0)


@pytest.fixture(scope="module")
def gpm(base, tmp_path_factory):
    """A GPM with a new (untrained) head, saved: what ``preference=gpm`` loads."""
    return GeneralPreferenceModel(save_new(base, tmp_path_factory.mktemp("gpm") / "gpm", dim=4), batch_size=5)


def test_swapping_the_responses_gives_exactly_one_minus_p(gpm):
    prompts = ["tell", "say", "", "give write", "tell"]
    a = ["sun", "rain mud", "cat dog fox", "owl", "gold"]
    b = ["cat", "sun sun", "rose", "owl", "gold"]  # the last two: a response against itself
    p, q = gpm.prob_text(prompts, a, b), gpm.prob_text(prompts, b, a)
    assert torch.equal(p + q, torch.ones(5)) and torch.equal(p[-2:], torch.full((2,), 0.5))
    assert p.std() > 1e-3  # a real function of the text
    one = gpm.prob_text(prompts + prompts, a + b, b + a)  # both orders in one call
    assert torch.equal(one[:5] + one[5:], torch.ones(5))
    v = torch.randn(7, 4, dtype=torch.float64)
    w, lam = torch.randn(7, 4, dtype=torch.float64), torch.rand(7, 2, dtype=torch.float64)
    assert torch.equal(skew_score(v, w, lam), -skew_score(w, v, lam)) and torch.equal(skew_score(v, v, lam), torch.zeros(7))


class Reader:
    """Decodes a tabular policy's responses (N, k, 1) as words: what a causal LM's ``decode`` does for text."""

    def decode(self, ids):
        return [" ".join(WORDS[int(t)] for t in row) for row in ids]

    def prompt_text(self, i):
        return PROMPTS[i]


def test_k_responses_cost_k_plus_one_encoder_passes(gpm):
    """label_all_pairs asks all k(k − 1)/2 pairs in one call: the GPM encodes each distinct response once, and
    each distinct prompt once for its gate. k = 8 responses of 2 prompts: 2·(8 + 1) = 18 sequences, where the
    pairwise classifier reads 2·28 pairs in both orders, 112."""
    seen = []
    hook = gpm.model.register_forward_pre_hook(lambda m, args, kw: seen.append(kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        rollouts = Rollouts(network=Reader(), generator=None, preference=gpm)
        responses = torch.arange(16).view(2, 8, 1)  # 16 distinct one-word responses
        P_hat = rollouts.label_all_pairs(torch.tensor([0, 1]), responses)
    finally:
        hook.remove()
    assert sum(seen) == 2 * (8 + 1)
    texts = Reader().decode(responses[1])  # the same probabilities as asked one pair at a time
    assert P_hat[1, 2, 5].item() == pytest.approx(gpm.prob_text([PROMPTS[1]], [texts[2]], [texts[5]]).item(), abs=1e-6)


def test_a_model_without_a_gpm_head_is_refused(base):
    with pytest.raises(ValueError, match="has no general-preference head .* train_preference preference=gpm"):
        GeneralPreferenceModel(base)
    with pytest.raises(ValueError, match="dim must be an even integer ≥ 2"):
        GeneralPreferenceModel(base, new_head={"dim": 3, "prompt_gate": False, "tau": 0.1})


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """train_preference preference=gpm and preference=bradley_terry through the CLI, on the same cyclic data."""
    root = tmp_path_factory.mktemp("cyclic")
    train, held = cyclic_data()
    data = [f"data.path={write_jsonl(root / 'train.jsonl', train)}", f"data.eval_path={write_jsonl(root / 'held.jsonl', held)}",
            f"model_path={base}", f"data.cache_dir={root / 'cache'}", *FAST]
    kinds = ("gpm", "bradley_terry")
    for kind in kinds:
        (root / kind).mkdir()
    outs = run_many(*(((("train_preference", f"preference={kind}", *data, "gpm.dim=4"), {"cwd": root / kind})) for kind in kinds))
    result = {"held": held}
    for kind, out in zip(kinds, outs):
        assert out.returncode == 0, out.stderr[-3000:]
        (line,) = [s for s in out.stdout.splitlines() if s.startswith("lit_nash train_preference:")]
        saved = line.split("| saved ")[1].split(";")[0]
        assert line.endswith(f"use it with: python -m lit_nash fit preference={kind} preference.path={saved}"
                             + (" preference.use_chat_template=false" if kind == "bradley_terry" else "") + " ...")
        client = MlflowClient(f"sqlite:///{root / kind / 'mlruns.db'}")
        (run,) = client.search_runs([client.get_experiment_by_name("lit_nash_preference").experiment_id])
        assert run.info.status == "FINISHED" and run.data.tags["preference"] == kind
        result[kind] = {"saved": saved, "eval_accuracy": run.data.metrics["eval/accuracy"]}
    return result


def test_gpm_fits_the_cycle_that_bradley_terry_cannot(trained):
    """Measured (model seed 0, data seed 0, 300 steps of 32 pairs): held-out majority accuracy GPM 1.00, BT 0.55;
    eval/accuracy on the sampled held-out labels GPM 0.92, BT 0.54 (P's own expected ceiling: 0.87; a transitive
    order's, 0.67). At 150 steps the GPM had not yet left BT's level (0.55). The two runs take ~20 s of CPU each."""
    gpm = GeneralPreferenceModel(trained["gpm"]["saved"], batch_size=64)
    bt = BradleyTerryReward(trained["bradley_terry"]["saved"], use_chat_template=False, batch_size=64)
    acc = {"gpm": majority_accuracy(gpm, trained["held"]), "bradley_terry": majority_accuracy(bt, trained["held"])}
    print(f"held-out majority accuracy {acc}; eval/accuracy gpm {trained['gpm']['eval_accuracy']:.3f}, "
          f"bradley_terry {trained['bradley_terry']['eval_accuracy']:.3f}")
    assert acc["bradley_terry"] <= 2 / 3 + 1e-9  # a theorem for any transitive order on this held-out set
    assert acc["gpm"] >= 0.95, acc
    assert trained["gpm"]["eval_accuracy"] > trained["bradley_terry"]["eval_accuracy"] + 0.1
