"""``lit_nash.plots`` on real matplotlib figures (Agg): what the heatmap and the curves say, read back from
the figure itself; and the files they save are real images."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import imread

from lit_nash import plots


def test_short_labels_drop_the_parts_every_name_shares():
    assert plots.short_labels(["egpo-token_game-seed0", "sppo-token_game-seed0"]) == (["egpo", "sppo"], "token_game-seed0")
    assert plots.short_labels(["egpo-g-seed0", "egpo-g-seed1"]) == (["seed0", "seed1"], "egpo-g")
    assert plots.short_labels(["a-x", "b-y"]) == (["a-x", "b-y"], "")  # nothing shared
    assert plots.short_labels(["mpo-g-seed0", "mpo-g-seed0_2"]) == (["seed0", "seed0_2"], "mpo-g")
    assert plots.short_labels(["a-g", "a-g-x"]) == (["a-g", "a-g-x"], "")  # a label would be empty
    assert plots.short_labels(["only-one"]) == (["only-one"], "")


def test_plural():
    assert plots.sample_size(1, 16) == "1 prompt × 16 samples" and plots.sample_size(4, 1) == "4 prompts × 1 sample"


def test_the_heatmap_has_axis_and_colour_bar_titles_and_short_labels(tmp_path):
    names = ["egpo-token_game-seed0", "sppo-token_game-seed0", "mpo-token_game-seed0"]
    M = [[0.5, 0.7, 0.4], [0.3, 0.5, 0.45], [0.6, 0.55, 0.5]]
    ci = [[0.0, 0.05, 0.05], [0.05, 0.0, 0.05], [0.05, 0.05, 0.0]]
    fig = plots.win_rate_figure(names, M, ci, plots.sample_size(1, 16) + ", ± the 95% half-width")
    ax, bar = fig.axes
    assert ax.get_xlabel() == "column: the opponent" and ax.get_ylabel() == "row: the policy"
    assert bar.get_ylabel() == "P(row ≻ column): win rate of the row's policy"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["egpo", "sppo", "mpo"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["egpo", "sppo", "mpo"]
    assert fig._suptitle.get_text() == "P(row ≻ column), token_game-seed0\n1 prompt × 16 samples, ± the 95% half-width"
    assert "0.70\n±0.05" in [t.get_text() for t in ax.texts]
    plt.close(fig)
    plots.plot_win_rates(names, M, ci, tmp_path / "m.png", "t")
    assert min(imread(tmp_path / "m.png").shape[:2]) > 200


def test_on_a_game_the_exact_matrix_is_drawn_beside_the_sampled_one(tmp_path):
    M, ci = [[0.5, 0.62], [0.38, 0.5]], [[0.0, 0.04], [0.04, 0.0]]
    fig = plots.win_rate_figure(["a-g-seed0", "b-g-seed0"], M, ci, "t", exact=[[0.5, 0.6], [0.4, 0.5]])
    sampled, exact, bar = fig.axes
    assert (sampled.get_title(), exact.get_title()) == ("sampled", "exact")
    assert "0.62\n±0.04" in [t.get_text() for t in sampled.texts] and "0.60" in [t.get_text() for t in exact.texts]
    assert exact.get_xlabel() == "column: the opponent" and bar.get_ylabel().startswith("P(row ≻ column)")
    plt.close(fig)


def runs(*histories):
    return [{"seed": str(i), "history": {"m": list(h.items())}} for i, h in enumerate(histories)]


def test_each_group_is_drawn_on_its_own_step_grid():
    """One group logs every step, one every other step (EGPO's iterations), and one's seeds logged different
    steps: each group keeps its whole curve; the last one on the steps of either seed, interpolated."""
    every = {s: 1.0 / (s + 1) for s in range(10)}
    other = {s: 2.0 / (s + 1) for s in range(0, 20, 2)}
    groups = {"a": runs(every, every), "b": runs(other), "c": runs({0: 0.0, 4: 4.0, 8: 8.0}, {2: 2.0, 6: 6.0, 8: 8.0})}
    fig = plots.curves_figure(groups, "m", "algo", False, "t")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert sorted(lines) == ["a (n=2)", "b (n=1)", "c (n=2)"]
    assert list(lines["a (n=2)"].get_xdata()) == list(range(10))
    assert list(lines["b (n=1)"].get_xdata()) == list(range(0, 20, 2))
    # c: the steps either seed logged within the range both cover (2..8); each seed linear between its steps
    assert list(lines["c (n=2)"].get_xdata()) == [2, 4, 6, 8]
    np.testing.assert_allclose(lines["c (n=2)"].get_ydata(), [2.0, 4.0, 6.0, 8.0])
    plt.close(fig)


def test_seeds_whose_steps_do_not_overlap_are_left_out_with_a_warning():
    with pytest.warns(UserWarning, match="do not overlap"):
        fig = plots.curves_figure({"a": runs({0: 1.0, 1: 1.0}, {5: 1.0, 6: 1.0})}, "m", "algo", False, "t")
    assert fig.axes[0].get_lines() == []
    plt.close(fig)


def test_a_quantity_that_spans_decades_gets_a_log_axis():
    decay = {s: 10.0 ** -s for s in range(5)}  # 1 .. 1e-4: four decades
    fig = plots.curves_figure({"a": runs(decay)}, "m", "algo", False, "t")
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_ylabel() == "m (log scale)"
    plt.close(fig)
    flat = {s: 1.0 + s for s in range(5)}  # 1 .. 5
    signed = {s: (-1.0) ** s * 10.0 ** -s for s in range(5)}  # crosses 0: a log axis cannot show it
    for history in (flat, signed):
        fig = plots.curves_figure({"a": runs(history)}, "m", "algo", False, "t")
        assert fig.axes[0].get_yscale() == "linear"
        plt.close(fig)
    assert plots.spans_decades([1e-3, 1.0]) and not plots.spans_decades([0.05, 1.0])
