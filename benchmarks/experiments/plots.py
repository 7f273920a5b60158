"""PNG plots of an Optuna study, for ``bench tune`` (matplotlib's Agg canvas, no pyplot, so
nothing here needs a display or touches global matplotlib state).

* ``param_<key>.png``: validation metric against each tuned key, one point per trial, like
  the mask-ratio / hidden-size sensitivity figures in the BERT4Rec paper. Pruned trials are
  drawn hollow at the best value they reached before being stopped.
* ``optimization_history.png``: value per trial and the best so far.
* ``learning_curves.png``: validation metric per epoch for every trial (pruned dashed).
* ``param_importances.png``: fANOVA importance of each tuned key (Optuna's default
  evaluator, seeded); needs two complete trials with a tuned key.
* ``contour.png``: validation metric over the two most important keys, interpolated between
  the complete trials (pruned ones have no final value), the trials drawn on top.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from recboard.benchmarks.tracking.figures import new_figure, save_figure

COMPLETE_STYLE = {"color": "tab:blue", "label": "complete"}
PRUNED_STYLE = {"facecolors": "none", "edgecolors": "tab:red", "label": "pruned (best before stop)"}


def _points(study):
    """(trial, value, pruned) for trials that produced a number."""
    import optuna

    S = optuna.trial.TrialState
    out = []
    for t in study.trials:
        if t.state == S.COMPLETE and t.value is not None:
            out.append((t, t.value, False))
        elif t.state == S.PRUNED and t.intermediate_values:
            out.append((t, max(t.intermediate_values.values()), True))
    return out


def plot_param(study, key: str, metric: str, path: Path, title: str = "") -> Path | None:
    """Validation metric vs one tuned key; None when no trial has a value for it."""
    import optuna

    points = [(t.params[key], v, pruned, t.distributions[key]) for t, v, pruned in _points(study) if key in t.params]
    if not points:
        return None
    fig, ax = new_figure()
    dist = points[-1][3]
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        choices = list(dist.choices)
        seen = [c for c in choices if any(p[0] == c for p in points)] or choices
        position = {c: i for i, c in enumerate(seen)}
        xs = [position.get(p[0], -1) for p in points]
        ax.set_xticks(range(len(seen)), [str(c) for c in seen])
    else:
        xs = [p[0] for p in points]
        if getattr(dist, "log", False):
            ax.set_xscale("log")
    for pruned, style in ((False, COMPLETE_STYLE), (True, PRUNED_STYLE)):
        sel = [i for i, p in enumerate(points) if p[2] == pruned]
        if sel:
            ax.scatter([xs[i] for i in sel], [points[i][1] for i in sel], s=36, **style)
    ax.set_xlabel(key)
    ax.set_ylabel(f"valid {metric}")
    ax.set_title(f"{title}: valid {metric} vs {key}" if title else f"valid {metric} vs {key}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)


def plot_history(study, metric: str, path: Path, title: str = "") -> Path | None:
    points = _points(study)
    if not points:
        return None
    fig, ax = new_figure()
    for pruned, style in ((False, COMPLETE_STYLE), (True, PRUNED_STYLE)):
        sel = [(t.number, v) for t, v, p in points if p == pruned]
        if sel:
            ax.scatter(*zip(*sel), s=36, **style)
    best, line = float("-inf"), []
    for t, v, pruned in sorted(points, key=lambda p: p[0].number):
        if not pruned:
            best = max(best, v)
        if best > float("-inf"):
            line.append((t.number, best))
    if line:
        ax.step(*zip(*line), where="post", color="black", linewidth=1, label="best so far")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"valid {metric}")
    ax.set_title(f"{title}: optimisation history" if title else "optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)


def plot_learning_curves(study, metric: str, path: Path, title: str = "") -> Path | None:
    import optuna

    curves = [t for t in study.trials if t.intermediate_values]
    if not curves:
        return None
    fig, ax = new_figure()
    for t in curves:
        steps = sorted(t.intermediate_values)
        pruned = t.state == optuna.trial.TrialState.PRUNED
        ax.plot(steps, [t.intermediate_values[s] for s in steps], linestyle="--" if pruned else "-",
                marker="." if len(steps) < 30 else None, alpha=0.8, label=f"#{t.number}" if len(curves) <= 10 else None)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {metric}")
    ax.set_title(f"{title}: learning curves (dashed = pruned)" if title else "learning curves (dashed = pruned)")
    ax.grid(alpha=0.3)
    if len(curves) <= 10:
        ax.legend(loc="best", fontsize="small", ncol=2)
    return save_figure(fig, path)


def param_importances(study) -> dict:
    """{key: importance} summing to 1, most important first; {} where it cannot be computed
    (fewer than two complete trials, no tuned key, or no spread to attribute)."""
    import warnings

    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2 or not any(t.params for t in complete):
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError, ImportError, ZeroDivisionError):
        return {}
    return {k: float(v) for k, v in found.items() if v == v}  # NaN when the values do not vary


def plot_importances(importances: dict, metric: str, path: Path, title: str = "") -> Path | None:
    if not importances:
        return None
    keys = list(importances)[::-1]  # most important on top
    fig, ax = new_figure(height=1.2 + 0.4 * len(keys))
    ax.barh(keys, [importances[k] for k in keys], color="tab:blue")
    for i, key in enumerate(keys):
        ax.text(importances[key], i, f" {importances[key]:.2f}", va="center", fontsize="small")
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"importance for valid {metric} (fANOVA)")
    ax.set_title(f"{title}: parameter importance" if title else "parameter importance")
    return save_figure(fig, path)


def _axis(ax, which: str, key: str, values: list, dist):
    """Plot coordinates for ``values`` of one key: category positions, log10 for log
    scales (so the interpolation is even on the scale the sampler used), else as is."""
    import optuna
    from matplotlib.ticker import FuncFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(key)
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        choices = list(dist.choices)
        axis.set_ticks(range(len(choices)), [str(c) for c in choices])
        return [float(choices.index(v)) if v in choices else -1.0 for v in values]
    if getattr(dist, "log", False):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{10 ** v:.3g}"))
        return [math.log10(v) for v in values]
    return [float(v) for v in values]


def plot_contour(study, x: str, y: str, metric: str, path: Path, title: str = "") -> Path | None:
    """Validation metric over keys ``x`` and ``y``; None with fewer than two complete trials
    that have both (with fewer than three distinct points only the points are drawn)."""
    import optuna

    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
              and t.value is not None and x in t.params and y in t.params]
    if len(trials) < 2:
        return None
    fig, ax = new_figure(width=6.5)
    xs = _axis(ax, "x", x, [t.params[x] for t in trials], trials[-1].distributions[x])
    ys = _axis(ax, "y", y, [t.params[y] for t in trials], trials[-1].distributions[y])
    values = [t.value for t in trials]
    try:  # needs three points not on one line
        ax.tricontourf(xs, ys, values, levels=12, cmap="viridis", alpha=0.8)
    except (ValueError, RuntimeError):
        pass
    dots = ax.scatter(xs, ys, c=values, cmap="viridis", edgecolors="black", s=40, zorder=3)
    ax.use_sticky_edges = False  # the contour would pin the limits to the outermost trials,
    ax.margins(0.05)             # cutting their dots in half
    fig.colorbar(dots, ax=ax, label=f"valid {metric}")
    ax.set_title(f"{title}: valid {metric} over {x}, {y}" if title else f"valid {metric} over {x}, {y}")
    return save_figure(fig, path)


def plot_study(study, keys, metric: str, out_dir, title: str = "") -> list:
    """All plots for a study into ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    importances = param_importances(study)
    written = [plot_history(study, metric, out_dir / "optimization_history.png", title),
               plot_learning_curves(study, metric, out_dir / "learning_curves.png", title),
               plot_importances(importances, metric, out_dir / "param_importances.png", title)]
    for key in keys:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        written.append(plot_param(study, key, metric, out_dir / f"param_{safe}.png", title))
    ranked = [k for k in importances if k in keys] + [k for k in keys if k not in importances]
    if len(ranked) >= 2:
        written.append(plot_contour(study, ranked[0], ranked[1], metric, out_dir / "contour.png", title))
    return [p for p in written if p is not None]
