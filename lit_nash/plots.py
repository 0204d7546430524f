"""``compare``'s curves, drawn for a paper (matplotlib, imported in the functions, headless).

Each group (the runs of one row of compare's table) is drawn on its own x grid, the x values its seeds logged
(``group_grid``), so groups that log on different steps each keep their whole curve, and seeds that logged
different x values are interpolated onto the ones they share. The line is the mean over seeds; the band is
± one standard error of that mean by default (``band="se"``), or the lowest to the highest seed
(``"minmax"``), or none. The legend names each group's seed count. The axes are labelled in words from
``lit_nash.glossary`` ("duality gap (original game)" against "optimizer step"). The y-axis is logarithmic where
asked or where the values are positive and span more than ``DECADES`` decades. Horizontal reference lines
mark the levels the runs aim at (π*_τ's duality gap, ε). More than ``SMALL_MULTIPLES`` groups would be a
tangle in one panel: each group then gets a panel of its own, the other groups' means in grey behind it, all
panels on shared axes."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from lit_nash import glossary

LOG_FLOOR = 1e-16  # non-positive values are clipped here on a log axis
LINE_STYLES = ["-", "--", ":", "-."]
DECADES = 2  # a positive quantity spanning more than this many decades gets a log y-axis
SMALL_MULTIPLES = 5  # more groups than this: one panel per group
BANDS = {"se": "± s.e. of the mean", "minmax": "band: lowest to highest seed", "none": ""}


def plural(n: int, word: str) -> str:
    """``1 prompt``, ``4 prompts``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def line_styles(values: list[tuple], n_colors: int) -> list[tuple[int, int]]:
    """(colour index, line-style index) per group, from each group's values of the group keys. With several
    keys and at most 4 values of the first (the algorithm, say), the first key picks the line style and the
    others the colour, so that equal settings share a colour across algorithms; otherwise colours in turn, a
    new style every n_colors groups."""
    firsts = list(dict.fromkeys(v[0] for v in values))
    rests = list(dict.fromkeys(tuple(x for x in v[1:] if x is not None) for v in values))
    if values and len(values[0]) > 1 and len(firsts) <= len(LINE_STYLES) and 1 < len(rests) <= n_colors:
        return [(rests.index(tuple(x for x in v[1:] if x is not None)), firsts.index(v[0])) for v in values]
    return [(i % n_colors, (i // n_colors) % len(LINE_STYLES)) for i in range(len(values))]


def group_grid(histories: list[dict[float, float]]):
    """A group's own x grid and each seed's values on it, (xs, values of shape (seeds, len(xs))): the x values
    any seed logged within the range every seed covers, each seed linearly interpolated between its own
    (exact where it logged that x). None where the seeds' ranges do not overlap."""
    import numpy as np

    first = max(min(h) for h in histories)
    last = min(max(h) for h in histories)
    xs = sorted({s for h in histories for s in h if first <= s <= last})
    if not xs:
        return None
    values = []
    for h in histories:
        own = sorted(h)
        values.append(np.interp(xs, own, [h[x] for x in own]))
    return np.asarray(xs), np.asarray(values, dtype=float)


def spans_decades(values, decades: float = DECADES) -> bool:
    """Whether finite values, all positive, span more than ``decades`` decades (max / min > 10**decades)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return v.size > 1 and bool((v > 0).all()) and float(v.max() / v.min()) > 10.0 ** decades


def band_of(values, band: str):
    """(low, high) of the band over seeds, or None (one seed, or ``band="none"``)."""
    import numpy as np

    n = len(values)
    if n < 2 or band == "none":
        return None
    if band == "minmax":
        return values.min(axis=0), values.max(axis=0)
    mean, se = values.mean(axis=0), values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean - se, mean + se


def curves_figure(curves: dict[str, list[dict]], metric: str, group_by: str, log: bool, title: str, x: str = "step",
                  band: str = "se", references: list[tuple[float, str]] | None = None, values: dict | None = None):
    """The figure of ``plot_curves`` (returned open). ``curves``: group label → one ``{metric: [(x, y), ...]}``
    per seed; ``values``: group label → its values of the group keys (for ``line_styles``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if band not in BANDS:
        raise SystemExit(f"lit_nash compare: band must be one of {list(BANDS)}, got {band!r}")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    looks = line_styles([(values or {}).get(name, (name,)) for name in curves], len(colors))
    drawn = []  # (label, xs, values (seeds, xs), colour, style)
    for (name, seeds), (color_index, style_index) in zip(curves.items(), looks):
        histories = [dict(h[metric]) for h in seeds if metric in h]
        if not histories:
            continue
        grid = group_grid(histories)
        if grid is None:
            warnings.warn(f"{metric}: the seeds of {name!r} logged x values that do not overlap; its curve is left out")
            continue
        xs, ys = grid
        drawn.append((f"{name} ({plural(len(histories), 'seed')})", xs, ys, colors[color_index], LINE_STYLES[style_index]))
    log = log or spans_decades(np.concatenate([v.ravel() for _, _, v, *_ in drawn]) if drawn else [])
    if log:
        drawn = [(name, xs, np.clip(ys, LOG_FLOOR, None), c, s) for name, xs, ys, c, s in drawn]
    many = len(drawn) > SMALL_MULTIPLES
    if many:
        cols = 3 if len(drawn) > 4 else 2
        rows = math.ceil(len(drawn) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows + 0.6), sharex=True, sharey=True,
                                 squeeze=False, dpi=100)
        panels = list(axes.ravel())
        for ax in panels[len(drawn):]:
            ax.set_visible(False)
    else:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        panels = [ax] * len(drawn) or [ax]
    for i, (name, xs, ys, color, style) in enumerate(drawn):
        ax = panels[i]
        if many:  # the other groups' means in grey behind this one
            for j, (_, xs2, ys2, *_rest) in enumerate(drawn):
                if j != i:
                    ax.plot(xs2, ys2.mean(axis=0), color="0.8", linewidth=0.8, zorder=1)
            ax.set_title(name, fontsize=9)
        ax.plot(xs, ys.mean(axis=0), color=color, linestyle=style, label=name, zorder=3)
        low_high = band_of(ys, band)
        if low_high is not None:
            ax.fill_between(xs, *low_high, color=color, alpha=0.2, linewidth=0, zorder=2)
    for ax in (panels[: len(drawn)] if many else panels[:1]):
        shown = sorted((r for r in references or [] if not (log and r[0] <= 0)), key=lambda r: r[0])
        for i, (level, text) in enumerate(shown):  # the lowest line's label under it, the others' above
            ax.axhline(level, color="0.35", linestyle=(0, (4, 3)), linewidth=0.9, zorder=1.5)
            ax.annotate(text, xy=(1.0, level), xycoords=("axes fraction", "data"), xytext=(-3, -3 if i == 0 else 3),
                        textcoords="offset points", ha="right", va="top" if i == 0 else "bottom", fontsize=7,
                        color="0.25", zorder=4)
        if log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    xlabel, ylabel = glossary.label(x), glossary.label(metric) + (" (log scale)" if log else "")
    if many:
        fig.supxlabel(xlabel, fontsize=10)
        fig.supylabel(ylabel, fontsize=10)
        fig.suptitle(f"{title}\n{group_by}: mean over seeds" + (f", {BANDS[band]}" if BANDS[band] else ""), fontsize=10)
    else:
        ax = panels[0]
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title=f"{group_by}: mean over seeds" + (f", {BANDS[band]}" if BANDS[band] else ""), fontsize="small",
                      title_fontsize="small")
    fig.tight_layout()
    return fig


def plot_curves(curves: dict[str, list[dict]], metric: str, group_by: str, log: bool, paths: list[Path], title: str,
                **options) -> None:
    """``curves_figure`` saved to each of ``paths`` (the suffix picks the format: .png, .pdf, .svg)."""
    save(curves_figure(curves, metric, group_by, log, title, **options), paths)


def sample_size(prompts: int, samples: int) -> str:
    """``1 prompt × 16 samples``: a heatmap's subtitle."""
    return f"{plural(prompts, 'prompt')} × {plural(samples, 'sample')}"


def benchmark_figure(panels: dict[str, dict], title: str):
    """The NLHF benchmark's figure (returned open): a row of panels per task, a column per iterate (last,
    average), each algorithm's gap to its own target against its preference queries, both axes logarithmic,
    the mean over seeds with a ± s.e. band; a thick line where the algorithm's paper claims that iterate;
    dashed lines at ε. One colour per algorithm across panels. ``panels``: ``benchmark_table.panels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    algos = sorted({a for p in panels.values() for curves in p["curves"].values() for a in curves})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    look = {a: (colors[i % len(colors)], LINE_STYLES[(i // len(colors)) % len(LINE_STYLES)]) for i, a in enumerate(algos)}
    iterates = list(next(iter(panels.values()))["curves"]) if panels else ["last"]
    fig, axes = plt.subplots(max(1, len(panels)), len(iterates), figsize=(5.2 * len(iterates) + 1.4, 2.9 * max(1, len(panels)) + 0.9),
                             squeeze=False, dpi=100)
    for (task, panel), row in zip(panels.items(), axes):
        for iterate, ax in zip(iterates, row):
            for algo, (claimed, seeds) in panel["curves"][iterate].items():
                grid = group_grid(seeds)
                if grid is None:
                    continue
                xs, ys = grid
                ys = np.clip(ys, LOG_FLOOR, None)
                color, style = look[algo]
                ax.plot(xs, ys.mean(axis=0), color=color, linestyle=style, linewidth=2.2 if claimed else 1.0, zorder=3)
                low_high = band_of(ys, "se")
                if low_high is not None:
                    ax.fill_between(xs, *low_high, color=color, alpha=0.15, linewidth=0, zorder=2)
            for name, eps in sorted(panel["epsilon"].items()):
                ax.axhline(eps, color="0.35", linestyle=(0, (4, 3)), linewidth=0.9, zorder=1.5)
                ax.annotate(f"ε = {eps:g} ({name})", xy=(1.0, eps), xycoords=("axes fraction", "data"), xytext=(-3, 3),
                            textcoords="offset points", ha="right", va="bottom", fontsize=7, color="0.25")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{task}: {iterate} iterate", fontsize=9)
    fig.supxlabel(glossary.label("pref/queries") + " (log scale)", fontsize=10)
    fig.supylabel("gap to the algorithm's target: NE gap or reg. gap (log scale)", fontsize=10)
    handles = [plt.Line2D([], [], color=look[a][0], linestyle=look[a][1]) for a in algos]
    width = 5.2 * len(iterates) + 1.4
    fig.legend(handles, algos, loc="center right", fontsize=8, frameon=False, title="algo", title_fontsize=8)
    fig.suptitle(f"{title}\nmean over seeds ± s.e.; thick: the iterate the algorithm's paper claims", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / width, 1))
    return fig


def save(fig, paths: list[Path]) -> None:
    """Write ``fig`` to each of ``paths`` (the suffix picks the format) and close it."""
    import matplotlib.pyplot as plt

    for path in paths:
        fig.savefig(path, dpi=150 if path.suffix == ".png" else None)
    plt.close(fig)
