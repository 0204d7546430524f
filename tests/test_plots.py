"""``lit_nash.plots`` and ``lit_nash.heatmap`` on real matplotlib figures (Agg): what the heatmap and the curves
say, read back from the figure itself; and the files they save are real images."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import imread

from lit_nash import heatmap, plots


def test_short_labels_drop_the_parts_every_name_shares():
    assert heatmap.short_labels(["egpo-token_game-seed0", "sppo-token_game-seed0"]) == (["egpo", "sppo"], "token_game-seed0")
    assert heatmap.short_labels(["egpo-g-seed0", "egpo-g-seed1"]) == (["seed0", "seed1"], "egpo-g")
    assert heatmap.short_labels(["a-x", "b-y"]) == (["a-x", "b-y"], "")  # nothing shared
    assert heatmap.short_labels(["mpo-g-seed0", "mpo-g-seed0_2"]) == (["seed0", "seed0_2"], "mpo-g")
    assert heatmap.short_labels(["a-g", "a-g-x"]) == (["a-g", "a-g-x"], "")  # a label would be empty
    assert heatmap.short_labels(["only-one"]) == (["only-one"], "")


def test_plural():
    assert plots.sample_size(1, 16) == "1 prompt × 16 samples" and plots.sample_size(4, 1) == "4 prompts × 1 sample"


def test_the_heatmap_has_axis_and_colour_bar_titles_and_short_labels(tmp_path):
    names = ["egpo-token_game-seed0", "sppo-token_game-seed0", "mpo-token_game-seed0"]
    M = [[0.5, 0.7, 0.4], [0.3, 0.5, 0.45], [0.6, 0.55, 0.5]]
    ci = [[0.0, 0.05, 0.05], [0.05, 0.0, 0.05], [0.05, 0.05, 0.0]]
    fig = heatmap.win_rate_figure(names, M, ci, plots.sample_size(1, 16) + ", ± the 95% half-width")
    ax, _, bar = fig.axes[0], None, fig.axes[-1]
    assert ax.get_xlabel() == "column: the opponent" and ax.get_ylabel() == "row: the policy"
    assert bar.get_ylabel() == "P(row ≻ column): win rate of the row's policy"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["egpo", "sppo", "mpo"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["egpo", "sppo", "mpo"]
    assert fig._suptitle.get_text().startswith("P(row ≻ column), token_game-seed0\n1 prompt × 16 samples, ± the 95% half-width")
    texts = [t.get_text() for t in ax.texts]
    assert "0.70*\n±0.05" in texts and "0.45\n±0.05" in texts  # 0.45 ± 0.05 contains ½: no asterisk
    plt.close(fig)
    heatmap.plot_win_rates(names, M, ci, tmp_path / "m.png", "t")
    assert min(imread(tmp_path / "m.png").shape[:2]) > 200 and (tmp_path / "m.pdf").stat().st_size > 1000


def test_noise_is_not_coloured_and_significant_cells_are():
    """A cell whose 95% interval contains ½ is masked (drawn white); one whose interval excludes ½ is coloured."""
    M = [[0.5, 0.62, 0.9], [0.38, 0.5, 0.52], [0.1, 0.48, 0.5]]
    ci = [[0.0, 0.15, 0.05], [0.15, 0.0, 0.01], [0.05, 0.01, 0.0]]
    assert heatmap.significant(M, ci).tolist() == [[False, False, True], [False, False, True], [True, True, False]]
    fig = heatmap.win_rate_figure(["a", "b", "c"], M, ci, "t")
    colours = fig.axes[0].images[0].get_array()
    assert colours.mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    plt.close(fig)


def test_the_heatmap_fits_the_artifact_viewer_with_ten_policies_and_the_exact_matrix(tmp_path):
    """Issue 26: a 10-policy heatmap with the exact matrix was 2771 pixels wide; now at most 1000, the exact
    matrix under the sampled one."""
    k = 10
    rng = np.random.default_rng(0)
    A = rng.uniform(0.2, 0.8, (k, k))
    M = np.triu(A, 1) + np.tril(1 - A.T, -1) + 0.5 * np.eye(k)
    names = [f"algorithm_{i}-comal_cycle-seed0" for i in range(k)]
    heatmap.plot_win_rates(names, M, np.full((k, k), 0.1), tmp_path / "m.png", "t", exact=M)
    height, width = imread(tmp_path / "m.png").shape[:2]
    assert 600 < width <= 1000 and height > width  # stacked: taller than wide
    for k in (2, 3, 4):  # a few policies, the exact matrix beside: still at most 1000 pixels
        heatmap.plot_win_rates(names[:k], M[:k, :k], np.full((k, k), 0.1), tmp_path / "s.png", "t", exact=M[:k, :k])
        assert imread(tmp_path / "s.png").shape[1] <= 1000


def test_on_a_game_the_exact_matrix_is_drawn_beside_the_sampled_one(tmp_path):
    M, ci = [[0.5, 0.62], [0.38, 0.5]], [[0.0, 0.04], [0.04, 0.0]]
    fig = heatmap.win_rate_figure(["a-g-seed0", "b-g-seed0"], M, ci, "t", exact=[[0.5, 0.6], [0.4, 0.5]])
    sampled, exact, bar = fig.axes
    assert (sampled.get_title(), exact.get_title()) == ("sampled", "exact")
    assert "0.62*\n±0.04" in [t.get_text() for t in sampled.texts] and "0.60" in [t.get_text() for t in exact.texts]
    assert not exact.images[0].get_array().mask[0, 1]  # the exact matrix has no noise: coloured
    assert exact.get_xlabel() == "column: the opponent" and bar.get_ylabel().startswith("P(row ≻ column)")
    plt.close(fig)


def runs(*histories):
    """One ``{metric: [(x, y), ...]}`` per seed, as compare passes a group's curves."""
    return [{"m": list(h.items())} for h in histories]


def test_each_group_is_drawn_on_its_own_step_grid():
    """One group logs every step, one every other step (EGPO's iterations), and one's seeds logged different
    steps: each group keeps its whole curve; the last one on the steps of either seed, interpolated."""
    every = {s: 1.0 / (s + 1) for s in range(10)}
    other = {s: 2.0 / (s + 1) for s in range(0, 20, 2)}
    groups = {"a": runs(every, every), "b": runs(other), "c": runs({0: 0.0, 4: 4.0, 8: 8.0}, {2: 2.0, 6: 6.0, 8: 8.0})}
    fig = plots.curves_figure(groups, "m", "algo", False, "t")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert sorted(lines) == ["a (2 seeds)", "b (1 seed)", "c (2 seeds)"]
    assert list(lines["a (2 seeds)"].get_xdata()) == list(range(10))
    assert list(lines["b (1 seed)"].get_xdata()) == list(range(0, 20, 2))
    # c: the steps either seed logged within the range both cover (2..8); each seed linear between its steps
    assert list(lines["c (2 seeds)"].get_xdata()) == [2, 4, 6, 8]
    np.testing.assert_allclose(lines["c (2 seeds)"].get_ydata(), [2.0, 4.0, 6.0, 8.0])
    plt.close(fig)


def test_seeds_whose_steps_do_not_overlap_are_left_out_with_a_warning():
    with pytest.warns(UserWarning, match="do not overlap"):
        fig = plots.curves_figure({"a": runs({0: 1.0, 1: 1.0}, {5: 1.0, 6: 1.0})}, "m", "algo", False, "t")
    assert fig.axes[0].get_lines() == []
    plt.close(fig)


def test_a_quantity_that_spans_decades_gets_a_log_axis():
    decay = {s: 10.0 ** -s for s in range(5)}  # 1 .. 1e-4: four decades
    fig = plots.curves_figure({"a": runs(decay)}, "m", "algo", False, "t")
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_ylabel() == "m (log scale)"  # a key the glossary lacks
    plt.close(fig)
    flat = {s: 1.0 + s for s in range(5)}  # 1 .. 5
    signed = {s: (-1.0) ** s * 10.0 ** -s for s in range(5)}  # crosses 0: a log axis cannot show it
    for history in (flat, signed):
        fig = plots.curves_figure({"a": runs(history)}, "m", "algo", False, "t")
        assert fig.axes[0].get_yscale() == "linear"
        plt.close(fig)
    assert plots.spans_decades([1e-3, 1.0]) and not plots.spans_decades([0.05, 1.0])


def test_axis_labels_come_from_the_glossary_and_the_band_is_the_standard_error():
    seeds = runs({0: 1.0, 1: 0.5}, {0: 3.0, 1: 0.5})
    fig = plots.curves_figure({"mpo": [{"game/duality_gap": h["m"]} for h in seeds]}, "game/duality_gap", "algo",
                              False, "t", x="pref/queries")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "preference queries" and ax.get_ylabel().startswith("duality gap (original game)")
    assert ax.get_legend().get_title().get_text() == "algo: mean over seeds, ± s.e. of the mean"
    (band,) = ax.collections
    at_zero = [y for x, y in band.get_paths()[0].vertices if x == 0]
    assert (min(at_zero), max(at_zero)) == pytest.approx((2.0 - 1.0, 2.0 + 1.0))  # mean 2, s.e. = std(1, 3)/√2 = 1
    plt.close(fig)
    fig = plots.curves_figure({"mpo": [{"m": h["m"]} for h in seeds]}, "m", "algo", False, "t", band="minmax")
    assert fig.axes[0].collections[0].get_paths()[0].vertices[:, 1].max() == pytest.approx(3.0)
    plt.close(fig)


def test_reference_lines_mark_the_targets():
    fig = plots.curves_figure({"a": runs({0: 0.5, 10: 0.01})}, "m", "algo", True, "t",
                              references=[(0.03, "ε = 0.03"), (0.0245, "π*_τ: 0.0245"), (0.0, "NE")])
    (ax,) = fig.axes
    levels = [line.get_ydata()[0] for line in ax.get_lines()[1:]]
    assert levels == [0.0245, 0.03]  # 0 has no place on a log axis
    assert [t.get_text() for t in ax.texts] == ["π*_τ: 0.0245", "ε = 0.03"]
    plt.close(fig)


def test_more_than_five_groups_are_small_multiples_with_the_seed_counts(tmp_path):
    curves = {f"g{i}": runs({0: 1.0 + i, 5: 0.5 + i}, {0: 1.0 + i, 5: 0.7 + i}) for i in range(7)}
    fig = plots.curves_figure(curves, "m", "algo", False, "overview")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 7 and [ax.get_title() for ax in panels] == [f"g{i} (2 seeds)" for i in range(7)]
    assert all(len(ax.get_lines()) == 7 for ax in panels)  # its own mean and the six others in grey
    plt.close(fig)
    plots.plot_curves(curves, "m", "algo", False, [tmp_path / "c.png", tmp_path / "c.pdf", tmp_path / "c.svg"], "t")
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF" and b"<svg" in (tmp_path / "c.svg").read_bytes()[:500]
