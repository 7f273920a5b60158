"""The canvas every figure drawn from tracked runs starts from and how it is saved: the tuning
report's plots (``recboard.benchmarks.experiments.plots``) and the leaderboard's sweep
figures (``recboard.leaderboard.figures``). matplotlib's Agg canvas, no pyplot, so nothing
here needs a display or touches global matplotlib state; matplotlib loads on first use.
"""
from __future__ import annotations

from pathlib import Path


def new_figure(width: float = 6.0, height: float = 4.0):
    """(figure, axes) on an Agg canvas, laid out with constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
