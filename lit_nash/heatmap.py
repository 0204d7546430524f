"""The win-rate heatmap of ``eval`` and ``compare``: P(row ≻ column), rows the policy and columns its opponent.

Only what the data support is coloured. A sampled cell is coloured (red above ½, blue below) only where its
95% interval excludes ½, and marked with an asterisk; a cell whose interval contains ½ stays white with grey
text, since its colour would be noise (with 16 pairs an interval is about ± 0.15). The exact matrix of a game
has no noise and is coloured throughout. The figure is sized for MLflow's artifact viewer: at most
``MAX_WIDTH`` inches at 100 dpi (1000 pixels), cells shrinking as policies are added, and with many policies
the exact matrix goes under the sampled one instead of beside it. The policies' names lose the parts every
name shares (``short_labels``), which go to the title."""

from __future__ import annotations

from pathlib import Path

MAX_WIDTH = 10.0  # inches, at 100 dpi: what the artifact viewer shows without shrinking
DPI = 100
MIN_SIDE = 3.4  # inches: the smallest matrix, so that two or three policies still make a readable figure


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


def significant(rates, ci95):
    """Per cell, whether its 95% interval excludes ½ (never on the diagonal)."""
    import numpy as np

    M, C = np.asarray(rates, dtype=float), np.asarray(ci95, dtype=float)
    sig = np.abs(M - 0.5) > np.nan_to_num(C, nan=np.inf)
    np.fill_diagonal(sig, False)
    return sig


def win_rate_figure(names: list[str], rates, ci95, title: str, exact=None):
    """The figure of ``plot_win_rates`` (returned open, for the caller to save and close)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels, shared = short_labels(names)
    k = len(labels)
    panels = [("sampled", np.asarray(rates, dtype=float), ci95)]
    if exact is not None:
        panels.append(("exact", np.asarray(exact, dtype=float), None))
    cols = len(panels) if len(panels) == 1 or k <= 4 else 1  # many policies: the exact matrix goes below
    rows = len(panels) // cols
    room = min(2.5, 0.35 + 0.07 * max(len(n) for n in labels))  # inches for the tick labels and axis title
    left, right, top, bottom = room + 0.3, 1.5, 1.0, room + 0.2  # margins in inches; right: the colour bar
    cell = 0.85
    while left + cols * cell * k + (cols - 1) * left + right > MAX_WIDTH and cell > 0.3:
        cell -= 0.05
    side = max(cell * k, MIN_SIDE)  # a few policies get bigger cells: the titles and the colour bar need the room
    side = min(side, (MAX_WIDTH - cols * left - right) / cols)  # but never wider than the viewer
    cell = side / k
    width = left + cols * side + (cols - 1) * left + right
    height = top + rows * side + (rows - 1) * (bottom + 0.3) + bottom
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    axes = [fig.add_axes([(left + c * (side + left)) / width, 1 - (top + (r + 1) * side + r * (bottom + 0.3)) / height,
                          side / width, side / height]) for r in range(rows) for c in range(cols)]
    font = max(5.5, min(9.0, 11.0 * cell))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    image = None
    for ax, (what, M, ci) in zip(axes, panels):
        sig = significant(M, ci) if ci is not None else ~np.eye(k, dtype=bool)
        image = ax.imshow(np.ma.masked_where(~sig, M), cmap=cmap, vmin=0.0, vmax=1.0)
        ax.imshow(np.ma.masked_where(~np.eye(k, dtype=bool), np.ones((k, k))), cmap="Greys", vmin=0, vmax=4)
        for i in range(k):
            for j in range(k):
                if i == j:
                    continue
                text = f"{M[i, j]:.2f}" + ("*" if ci is not None and sig[i, j] else "")
                if ci is not None:
                    text += f"\n±{np.asarray(ci, dtype=float)[i, j]:.2f}"
                strong = sig[i, j] and abs(M[i, j] - 0.5) > 0.3
                ax.text(j, i, text, ha="center", va="center", fontsize=font,
                        color="white" if strong else ("black" if sig[i, j] else "0.45"))
        ax.set_xticks(range(k), labels, rotation=35, ha="right", fontsize=font)
        ax.set_yticks(range(k), labels, fontsize=font)
        ax.set_xlabel("column: the opponent", fontsize=font + 1)
        ax.set_ylabel("row: the policy", fontsize=font + 1)
        if len(panels) > 1:
            ax.set_title(what, fontsize=font + 1)
    note = "coloured, *: the 95% interval excludes ½; white: it does not" if ci95 is not None else ""
    fig.suptitle("P(row ≻ column)" + (f", {shared}" if shared else "") + f"\n{title}" + (f"\n{note}" if note else ""),
                 fontsize=font + 1, y=1 - 0.08 / height, va="top")
    bar = fig.colorbar(image, cax=fig.add_axes([1 - 1.2 / width, 0.5 - min(side, 4.0) / 2 / height, 0.18 / width,
                                                min(side, 4.0) / height]))
    bar.set_label("P(row ≻ column): win rate of the row's policy", fontsize=font)
    return fig


def plot_win_rates(names: list[str], rates, ci95, path: Path, title: str, exact=None) -> list[Path]:
    """``win_rate_figure`` saved as ``path`` (a PNG) and the same figure as PDF beside it."""
    import matplotlib.pyplot as plt

    fig = win_rate_figure(names, rates, ci95, title, exact)
    written = []
    for target in (path, path.with_suffix(".pdf")):
        fig.savefig(target, dpi=DPI)
        written.append(target)
    plt.close(fig)
    return written
