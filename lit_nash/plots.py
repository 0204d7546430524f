"""The plots of ``compare`` and ``eval``: metric curves over seeds and the win-rate heatmap (matplotlib,
imported in the functions, headless).

Curves: each group (the runs of one row of compare's table) is drawn on its own step grid, the steps its
seeds logged (``group_grid``), so groups that log on different steps (an algorithm that logs every
iteration beside one that logs every optimizer step) each keep their whole curve, and a group whose seeds
logged different steps is interpolated onto the steps they share instead of losing its curve. The y-axis
is logarithmic where asked (compare's ``log_scale``) or where the plotted values are positive and span more
than ``DECADES`` decades (``spans_decades``).

Heatmap: P(row ≻ column) with axis titles (the policy of the row, its opponent in the column) and a titled
colour bar, and on a game the exact matrix beside the sampled one; the policies' names lose the parts
every name shares (``short_labels``: the game and the seed when all policies played one game with one
seed), which go to the title instead."""

from __future__ import annotations

import warnings
from pathlib import Path

LOG_FLOOR = 1e-16  # non-positive values are clipped here on a log axis
LINE_STYLES = ["-", "--", ":", "-."]
DECADES = 2  # a positive quantity spanning more than this many decades gets a log y-axis


def plural(n: int, word: str) -> str:
    """``1 prompt``, ``4 prompts``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def short_labels(names: list[str], sep: str = "-") -> tuple[list[str], str]:
    """The names without the ``sep``-separated parts that every name has (``egpo-token_game-seed0``,
    ``sppo-token_game-seed0`` → ``egpo``, ``sppo``), and those shared parts joined (``token_game-seed0``).
    The names unchanged (and "") for a single name, or where the short ones would be empty or not unique."""
    if len(names) < 2:
        return list(names), ""
    parts = [n.split(sep) for n in names]
    shared = [p for p in dict.fromkeys(parts[0]) if all(p in q for q in parts[1:])]
    labels = [sep.join(p for p in q if p not in shared) for q in parts]
    if not shared or any(not label for label in labels) or len(set(labels)) < len(labels):
        return list(names), ""
    return labels, sep.join(shared)


def line_styles(groups: dict[str, list[dict]], n_colors: int) -> list[tuple[int, int]]:
    """(colour index, line-style index) per group. With several group keys and at most 4 values of the first
    (the algorithm, say), the first key picks the line style and the others the colour, so that equal
    settings share a colour across algorithms; otherwise colours in turn, a new style every n_colors groups."""
    values = [runs[0].get("values", (name,)) for name, runs in groups.items()]
    firsts = list(dict.fromkeys(v[0] for v in values))
    rests = list(dict.fromkeys(tuple(x for x in v[1:] if x is not None) for v in values))
    if values and len(values[0]) > 1 and len(firsts) <= len(LINE_STYLES) and 1 < len(rests) <= n_colors:
        return [(rests.index(tuple(x for x in v[1:] if x is not None)), firsts.index(v[0])) for v in values]
    return [(i % n_colors, (i // n_colors) % len(LINE_STYLES)) for i in range(len(values))]


def group_grid(histories: list[dict[int, float]]):
    """A group's own step grid and each seed's values on it, (steps, values of shape (seeds, steps)): the
    steps any seed logged within the range every seed covers, each seed linearly interpolated between the
    steps it logged (exact where it logged the step; seeds that logged the same steps are not changed).
    None where the seeds' step ranges do not overlap."""
    import numpy as np

    first = max(min(h) for h in histories)
    last = min(max(h) for h in histories)
    steps = sorted({s for h in histories for s in h if first <= s <= last})
    if not steps:
        return None
    values = []
    for h in histories:
        xs = sorted(h)
        values.append(np.interp(steps, xs, [h[x] for x in xs]))
    return np.asarray(steps), np.asarray(values, dtype=float)


def spans_decades(values, decades: float = DECADES) -> bool:
    """Whether finite values, all positive, span more than ``decades`` decades (max / min > 10**decades)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return v.size > 1 and bool((v > 0).all()) and float(v.max() / v.min()) > 10.0 ** decades


def curves_figure(groups: dict[str, list[dict]], metric: str, group_by: str, log: bool, title: str):
    """The figure of ``plot_curves`` (returned open, for the caller to save and close)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    many = len(groups) > 6
    fig, ax = plt.subplots(figsize=(10, 5) if many else (7, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    looks = line_styles(groups, len(colors))
    drawn = []  # (steps, mean, low, high, label, color, style, band)
    for (name, runs), (color_index, style_index) in zip(groups.items(), looks):
        histories = [dict(r["history"][metric]) for r in runs if metric in r["history"]]
        if not histories:
            continue
        grid = group_grid(histories)
        if grid is None:
            warnings.warn(f"{metric}: the seeds of {name!r} logged steps that do not overlap; its curve is left out")
            continue
        steps, values = grid
        drawn.append((steps, values, f"{name} (n={len(histories)})", colors[color_index], LINE_STYLES[style_index]))
    log = log or spans_decades(np.concatenate([v.ravel() for _, v, *_ in drawn]) if drawn else [])
    for steps, values, label, color, style in drawn:
        if log:
            values = np.clip(values, LOG_FLOOR, None)
        ax.plot(steps, values.mean(axis=0), color=color, linestyle=style, label=label)
        if len(values) > 1:
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15, linewidth=0)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(metric + (" (log scale)" if log else ""))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        legend_title = f"{group_by}: mean over seeds, band min..max"
        if many:
            ax.legend(title=legend_title, fontsize="x-small", title_fontsize="small", loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        else:
            ax.legend(title=legend_title, fontsize="small")
    fig.tight_layout()
    return fig


def plot_curves(groups: dict[str, list[dict]], metric: str, group_by: str, log: bool, path: Path, title: str) -> None:
    """One line per group on its own step grid, a min..max band over its seeds (colours and line styles:
    ``line_styles``); a log y-axis with ``log`` or where the values span decades; past 6 groups the legend
    goes to the right of the axes."""
    import matplotlib.pyplot as plt

    fig = curves_figure(groups, metric, group_by, log, title)
    fig.savefig(path)
    plt.close(fig)


def win_rate_figure(names: list[str], rates, ci95, title: str, exact=None):
    """The figure of ``plot_win_rates`` (returned open, for the caller to save and close): the sampled
    matrix, and with ``exact`` (a game's exact P(row ≻ column)) the exact one beside it, one colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels, shared = short_labels(names)
    k = len(labels)
    panels = [("sampled", np.asarray(rates, dtype=float), ci95)]
    if exact is not None:
        panels.append(("exact", np.asarray(exact, dtype=float), None))
    longest = max(len(n) for n in labels)
    width, height = 1.6 + 1.1 * k + 0.07 * longest, 2.4 + 0.9 * k + 0.05 * longest
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 1.0, height), squeeze=False)
    for ax, (what, M, ci) in zip(axes[0], panels):
        im = ax.imshow(M, cmap="RdBu_r", vmin=0.0, vmax=1.0)
        for i in range(k):
            for j in range(k):
                text = "½" if i == j else f"{M[i, j]:.2f}" + (f"\n±{ci[i][j]:.2f}" if ci is not None else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if abs(M[i, j] - 0.5) > 0.3 else "black")
        ax.set_xticks(range(k), labels, rotation=35, ha="right")
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("column: the opponent")
        ax.set_ylabel("row: the policy")
        ax.set_title(what if len(panels) > 1 else "", fontsize=10)
    fig.suptitle("P(row ≻ column)" + (f", {shared}" if shared else "") + f"\n{title}", fontsize=10)
    bar = fig.colorbar(im, ax=list(axes[0]), fraction=0.046 / len(panels), pad=0.04)
    bar.set_label("P(row ≻ column): win rate of the row's policy")
    return fig


def plot_win_rates(names: list[str], rates, ci95, path: Path, title: str, exact=None) -> None:
    """The win-rate matrix as a heatmap centred on ½, each cell annotated with its value and interval; with
    ``exact`` (on a game), the exact matrix beside it."""
    import matplotlib.pyplot as plt

    fig = win_rate_figure(names, rates, ci95, title, exact)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def sample_size(prompts: int, samples: int) -> str:
    """``1 prompt × 16 samples``: the heatmap's subtitle."""
    return f"{plural(prompts, 'prompt')} × {plural(samples, 'sample')}"
