"""Writing the curves as PNG figures (matplotlib, Agg backend; ``pip install -e ".[bench]"``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchmarks.curves import HISTORY, RECALL, Curve

FIGURES = {
    HISTORY: (
        "turn_cost_vs_history.png",
        "Tier cost of one turn (load + save) vs history",
        "turns in the thread",
    ),
    RECALL: ("recall_vs_facts.png", "Recall latency vs facts stored (100 per user)", "facts in the table"),
}


def write(directory: Path, curves: Sequence[Curve]) -> list[Path]:
    """One PNG per figure that has curves, p50 solid and p99 dashed; returns the files written."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise SystemExit('--plot needs matplotlib: pip install -e ".[bench]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_figure: dict[str, list[Curve]] = defaultdict(list)
    for curve in curves:
        by_figure[curve.figure].append(curve)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for figure, members in by_figure.items():
        filename, title, xlabel = FIGURES[figure]
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for curve in members:
            (line,) = ax.plot(curve.x, [v / 1000 for v in curve.p50], marker="o", label=f"{curve.label} p50")
            ax.plot(curve.x, [v / 1000 for v in curve.p99], linestyle="--", color=line.get_color(),
                    label=f"{curve.label} p99")  # fmt: skip
        if figure == RECALL:
            ax.set_xscale("log")
        ax.set(title=title, xlabel=xlabel, ylabel="latency (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncols=2)
        fig.tight_layout()
        path = directory / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
