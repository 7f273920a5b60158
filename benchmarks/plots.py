"""PNG plots of an Optuna study, for ``bench tune`` (matplotlib's Agg canvas, no pyplot, so
nothing here needs a display or touches global matplotlib state).

* ``param_<key>.png``: validation metric against each tuned key, one point per trial, like
  the mask-ratio / hidden-size sensitivity figures in the BERT4Rec paper. Pruned trials are
  drawn hollow at the best value they reached before being stopped.
* ``optimization_history.png``: value per trial and the best so far.
* ``learning_curves.png``: validation metric per epoch for every trial (pruned dashed).
"""
from __future__ import annotations

import re
from pathlib import Path

COMPLETE_STYLE = {"color": "tab:blue", "label": "complete"}
PRUNED_STYLE = {"facecolors": "none", "edgecolors": "tab:red", "label": "pruned (best before stop)"}


def _figure(width: float = 6.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


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
    fig, ax = _figure()
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
    return _save(fig, path)


def plot_history(study, metric: str, path: Path, title: str = "") -> Path | None:
    points = _points(study)
    if not points:
        return None
    fig, ax = _figure()
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
    return _save(fig, path)


def plot_learning_curves(study, metric: str, path: Path, title: str = "") -> Path | None:
    import optuna

    curves = [t for t in study.trials if t.intermediate_values]
    if not curves:
        return None
    fig, ax = _figure()
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
    return _save(fig, path)


def plot_study(study, keys, metric: str, out_dir, title: str = "") -> list:
    """All plots for a study into ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_history(study, metric, out_dir / "optimization_history.png", title),
               plot_learning_curves(study, metric, out_dir / "learning_curves.png", title)]
    for key in keys:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        written.append(plot_param(study, key, metric, out_dir / f"param_{safe}.png", title))
    return [p for p in written if p is not None]
