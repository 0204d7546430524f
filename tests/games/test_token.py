"""Token games: enumeration, a valid and intransitive P per prompt, decoding responses to actions."""

import pytest
import torch

from lit_nash.games import nash_equilibrium, validate_preference_matrix
from lit_nash.games.token import TokenGame, token_game
from lit_nash.models import build_tokenizer
from lit_nash.preference.token_game import TokenGameOracle
from lit_nash.rollout import label


def test_enumerates_every_word_sequence_plus_invalid():
    g = token_game()
    assert len(g.responses) == 3 + 9 and g.num_actions == 13 and g.num_prompts == 4
    assert g.responses[:3] == [("a",), ("b",), ("c",)] and ("c", "a") in g.responses
    assert len(token_game(max_len=3, words=("x", "y", "z")).responses) == 3 + 9 + 27
    assert g.name == "token_game" and g.prompts == ["say 0", "say 1", "say 2", "say 3"]
    assert g.vocabulary() == ["say", "0", "1", "2", "3", "a", "b", "c"]


def test_preference_is_valid_and_invalid_loses_to_everything():
    g = token_game()
    validate_preference_matrix(g.P)
    assert g.P.dtype == torch.float64 and g.P.shape == (4, 13, 13)
    inv = g.invalid_index
    assert (g.P[:, :inv, inv] == 1).all() and (g.P[:, inv, :inv] == 0).all() and (g.P[:, inv, inv] == 0.5).all()
    with pytest.raises(ValueError, match="shape"):
        TokenGame(prompts=["x"], responses=[("a",)], P=torch.full((1, 3, 3), 0.5))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kwargs", [{}, {"max_len": 3}, {"words": ("a", "b", "c", "d")}])
def test_every_prompt_is_intransitive_with_a_mixed_ne(seed, kwargs):
    g = token_game(seed=seed, **kwargs)
    valid = g.P[:, :-1, :-1]
    beats_all_others = ((valid > 0.5) | torch.eye(valid.shape[-1], dtype=torch.bool)).all(-1)
    assert not beats_all_others.any(), "a valid response is a Condorcet winner"
    ne = nash_equilibrium(g.P)
    assert ((ne[:, :-1] > 1e-6).sum(-1) >= 2).all()
    assert (ne[:, -1] < 1e-9).all()


def test_prompts_differ_and_seed_reproduces():
    a, b = token_game(seed=0), token_game(seed=0)
    assert torch.equal(a.P, b.P) and not torch.equal(a.P, token_game(seed=1).P)
    assert not torch.allclose(a.P[0], a.P[1])


def test_needs_three_words():
    with pytest.raises(ValueError, match="at least 3 distinct words"):
        token_game(words=("a", "b"))


def test_action_index_round_trip_and_invalid():
    g = token_game()
    for i, r in enumerate(g.responses):
        assert g.action_index(r) == i and g.action_index(list(r)) == i
    for bad in [(), ("a", "b", "c"), ("say",), ("a", "x"), ("A",), ("[EOS]",)]:
        assert g.action_index(bad) == g.invalid_index == 12


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    g = token_game()
    path = tmp_path_factory.mktemp("tok")
    build_tokenizer(g.vocabulary()).save_pretrained(path)
    return TokenGameOracle(g, str(path))


def _ids(oracle, words, eos=True, length=4):
    tok = oracle.tokenizer
    ids = [tok.convert_tokens_to_ids(w) for w in words] + ([tok.eos_token_id] if eos else [])
    return ids + [tok.pad_token_id] * (length - len(ids))


def test_oracle_reads_p_of_decoded_responses(oracle):
    g, tok = oracle.game, oracle.tokenizer
    a = torch.tensor([[_ids(oracle, ("a", "b")), _ids(oracle, ("c",))], [_ids(oracle, ("b",)), _ids(oracle, ("b", "b"))]])
    b = torch.tensor([[_ids(oracle, ("c", "c")), _ids(oracle, ("a",))], [_ids(oracle, ("a", "a")), _ids(oracle, ("b", "b"))]])
    prompt = torch.tensor([2, 0])
    p = oracle.prob(prompt, a, b)
    ix = g.action_index
    expect = [[g.P[2, ix(("a", "b")), ix(("c", "c"))], g.P[2, ix(("c",)), ix(("a",))]],
              [g.P[0, ix(("b",)), ix(("a", "a"))], 0.5]]
    assert torch.allclose(p, torch.tensor(expect, dtype=torch.float64))
    assert torch.allclose(oracle.prob(prompt, b, a), 1 - p)
    # the oracle's tokenizer is its own object, loaded from the directory
    assert tok is not build_tokenizer(g.vocabulary())


def test_oracle_invalid_responses(oracle):
    tok = oracle.tokenizer
    inv = oracle.game.invalid_index
    cases = [
        _ids(oracle, ("a", "b"), eos=False),  # no EOS: truncated
        _ids(oracle, ("say", "a")),  # a prompt word
        [tok.bos_token_id, tok.convert_tokens_to_ids("a"), tok.eos_token_id, 0],  # a special token before EOS
        [tok.pad_token_id, tok.convert_tokens_to_ids("a"), tok.eos_token_id, 0],
        _ids(oracle, ("a", "b", "c")),  # too long
        _ids(oracle, ()),  # empty
    ]
    idx = oracle.action_indices(torch.tensor(cases))
    assert idx.tolist() == [inv] * len(cases)
    valid = torch.tensor([[_ids(oracle, ("a",))] * len(cases)])
    p = oracle.prob(torch.tensor([1]), valid, torch.tensor([cases]))
    assert (p == 1).all()


def test_oracle_rejects_non_probabilities_and_bad_shapes(oracle):
    a = torch.tensor([[_ids(oracle, ("a",))]])
    with pytest.raises(ValueError, match="expects"):
        oracle.prob(torch.tensor([0, 1]), a, a)
    saved = oracle.P.clone()
    try:
        oracle.P[0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match=r"returned nan for prompt 0, pair 0 \(responses \[.*\] vs \[.*\]\)"):
            label(oracle, torch.tensor([0]), a, a)  # every preference model's output is checked here
    finally:
        oracle.P.copy_(saved)


def test_oracle_needs_an_existing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TokenGameOracle(token_game(), str(tmp_path / "nowhere"))
