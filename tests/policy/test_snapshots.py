"""The one snapshot store: named copies of tensors, history rings (newest first, bounded, buffers reused),
a place in the state dict, and recreation from a checkpoint's keys."""

import pytest
import torch

from lit_nash.policy.snapshots import Snapshots


def tensors(value: float) -> dict:
    return {"model.layer.weight": torch.full((2, 3), value), "bias": torch.tensor([value])}


def test_take_copies_and_reuses_its_buffers():
    store = Snapshots()
    source = tensors(1.0)
    store.take("magnet", source)
    source["bias"].fill_(7.0)  # a copy, not a view
    assert store["magnet"]["bias"].item() == 1.0 and set(store["magnet"]) == set(source)
    buffer = store.entries["magnet"]._buffers["model-layer-weight"]
    store.take("magnet", tensors(2.0))
    assert store.entries["magnet"]._buffers["model-layer-weight"] is buffer and buffer[0, 0].item() == 2.0
    assert "magnet" in store and "anchor" not in store and store.names() == ["magnet"]


def test_a_history_ring_is_newest_first_and_bounded():
    store = Snapshots()
    for value in range(5):
        store.push("history", tensors(float(value)), maxlen=3)
    assert store.ring("history") == 3 and store.ring("magnet") == 0
    assert [store[f"history/{i}"]["bias"].item() for i in range(3)] == [4.0, 3.0, 2.0]
    assert store.names() == ["history/0", "history/1", "history/2"]


@pytest.mark.parametrize("name", ["", "1abc", "a b", "x/y/z", "ref.1"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="snapshot name"):
        Snapshots().take(name, tensors(0.0))


def test_a_missing_snapshot_names_the_ones_taken():
    store = Snapshots()
    store.take("ref", tensors(0.0))
    with pytest.raises(KeyError, match=r"no snapshot 'magnet'; taken so far: \['ref'\]"):
        store["magnet"]


def test_state_dict_round_trip_through_register_from_state_dict():
    store = Snapshots()
    store.take("ref", tensors(1.0))
    store.push("history", tensors(2.0), maxlen=2)
    store.push("history", tensors(3.0), maxlen=2)
    state = {f"snapshots.{k}": v for k, v in store.state_dict().items()}
    fresh = Snapshots()
    fresh.register_from_state_dict(state, "snapshots.")
    fresh.load_state_dict({k[len("snapshots."):]: v for k, v in state.items()})
    assert fresh.names() == store.names()
    for name in store.names():
        for key, value in store[name].items():
            assert torch.equal(fresh[name][key], value)
