"""The plots of ``compare`` and ``eval``: metric curves over seeds and the win-rate heatmap (matplotlib,
imported in the functions, headless)."""

from __future__ import annotations

from pathlib import Path

LOG_FLOOR = 1e-16  # non-positive values are clipped here on a log axis
LINE_STYLES = ["-", "--", ":", "-."]


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


def plot_curves(groups: dict[str, list[dict]], metric: str, group_by: str, log: bool, path: Path, title: str) -> None:
    """One line per group, a min..max band over its seeds (colours and line styles: ``line_styles``); past 6
    groups the legend goes to the right of the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    many = len(groups) > 6
    fig, ax = plt.subplots(figsize=(10, 5) if many else (7, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    looks = line_styles(groups, len(colors))
    for (name, runs), (color_index, style_index) in zip(groups.items(), looks):
        histories = [dict(r["history"][metric]) for r in runs if metric in r["history"]]
        if not histories:
            continue
        steps = sorted(set.intersection(*(set(h) for h in histories)))  # the steps every seed logged
        if not steps:
            continue
        values = np.array([[h[s] for s in steps] for h in histories], dtype=float)
        if log:
            values = np.clip(values, LOG_FLOOR, None)
        mean = values.mean(axis=0)
        color, style = colors[color_index], LINE_STYLES[style_index]
        ax.plot(steps, mean, color=color, linestyle=style, label=f"{name} (n={len(histories)})")
        if len(histories) > 1:
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
    fig.savefig(path)
    plt.close(fig)


def plot_win_rates(names: list[str], rates, ci95, path: Path, title: str) -> None:
    """The win-rate matrix as a heatmap centred on ½, each cell annotated with its value and interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(names)
    M = np.asarray(rates, dtype=float)
    label = max(len(n) for n in names)
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * k + 0.07 * label, 1.8 + 0.9 * k + 0.05 * label))
    im = ax.imshow(M, cmap="RdBu_r", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            text = "½" if i == j else f"{M[i, j]:.2f}\n±{ci95[i][j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if abs(M[i, j] - 0.5) > 0.3 else "black")
    ax.set_xticks(range(k), names, rotation=35, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_title("P(row ≻ column)", fontsize=11)
    ax.set_xlabel(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
