"""Sensitivity figures of ``bench sweep`` (the BERT4Rec paper's Figures 4-5 and Table 4),
drawn from MLflow runs, never from a process's memory.

* ``collect()`` reads the FINISHED seed groups tagged ``recboard.sweep`` from one or several
  stores and makes one ``SweepPoint`` per (sweep, protocol, dataset, value): the newest such
  group, the mean of each test metric over its seed runs and their sample standard deviation
  (ddof 1, as ``recboard.benchmarks.experiments.seeds``), computed here from the seed runs themselves.
  A line never mixes configurations: when a sweep was re-run on a dataset with other fixed
  keys (``--set epochs=...``), only the points of the newest configuration are drawn.
* ``draw()`` writes one PNG per (sweep, protocol, metric) -- a sweep is one model and one
  key, so this is one per (model, key, protocol, metric): x the swept value, y the mean with
  the std as error bars, one line per dataset (each with its own values: max-length grids
  differ between datasets), the title naming model, metric and protocol.
* ``markdown()`` lays the figures out with a table of their points under each (value, mean ±
  std, seeds, training time, device, group run and commit): the "Sensitivity" section of
  ``bench leaderboard`` and the ``sweep.md`` that ``bench sweep`` writes.

Plots use matplotlib's Agg canvas without pyplot (``recboard.benchmarks.experiments.plots``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from recboard.benchmarks.tracking import store as tracking
from recboard.leaderboard.tables import DATASET_TITLES, PROTOCOL_TITLES, duration, run_cell
from recboard.leaderboard.runs import stores

# what a figure shows by default, per protocol: the BERT4Rec paper plots NDCG@10 (and reports HR@10)
DEFAULT_METRICS = {"impressions": ("AUC", "nDCG@10")}
SEQUENCE_DEFAULT_METRICS = ("NDCG@10", "HR@10")
HEADING = "Sensitivity (the paper's §4.5–4.7)"
INTRO = ("One hyper-parameter varied at a time with everything else fixed, as in the BERT4Rec paper's "
         "sensitivity study (§4.5–4.7, Figures 4–5, Table 4). Each point is a seed group trained by "
         "`bench sweep`: the test metric's mean over its seeds, the error bar their sample standard "
         "deviation; one line per dataset. These groups are ablation points, not rows of the tables above.")


@dataclass
class SweepPoint:
    sweep: str
    model: str
    param: str
    protocol: str
    dataset: str
    value: str              # the swept value as tagged (``64``, ``0.2``)
    metrics: dict           # test metric label -> (mean, std) over the seeds
    seeds: list
    device: str
    git_commit: str
    train_time_s: float | None   # mean over the seeds
    group_run_id: str
    start_time: int
    fixed: tuple = ()       # the group's params but the swept key: the configuration held fixed


@dataclass
class Section:
    """The points of one sweep under one protocol: its figures and its table."""
    sweep: str
    model: str
    param: str
    protocol: str
    points: list

    @property
    def metrics(self) -> list:
        wanted = DEFAULT_METRICS.get(self.protocol, SEQUENCE_DEFAULT_METRICS)
        return [m for m in wanted if any(m in p.metrics for p in self.points)]


# --------------------------------------------------------------------------- collect

def collect(tracking_uri=None, sweeps=None, groups=None) -> list[SweepPoint]:
    """The newest FINISHED group of every sweep point in the store(s) at ``tracking_uri``
    (one URI or a list); ``sweeps``: only these sweep names; ``groups``: only these group
    run ids (``bench sweep`` plotting exactly the points it ran or reused)."""
    newest: dict = {}
    for uri in stores(tracking_uri):
        parents = {run.info.run_id: run for run in tracking.search_runs(
            tracking.tag_filter({"recboard.kind": "group"}, status="FINISHED"), uri, output_format="list")
            if run.data.tags.get("recboard.sweep")
            and (sweeps is None or run.data.tags["recboard.sweep"] in sweeps)
            and (groups is None or run.info.run_id in groups)}
        for name in sorted({run.data.tags["recboard.sweep"] for run in parents.values()}):
            members: dict = {}
            for run in tracking.search_runs(tracking.tag_filter({"recboard.kind": "run", "recboard.sweep": name},
                                                                status="FINISHED"), uri, output_format="list"):
                group = run.data.tags.get("recboard.group")
                if group in parents:
                    members.setdefault(group, []).append(run)
            for group, runs in members.items():
                point = _point(parents[group], runs)
                key = (point.sweep, point.protocol, point.dataset, point.value)
                if key not in newest or point.start_time > newest[key].start_time:
                    newest[key] = point
    return sorted(_newest_configuration(newest.values()),
                  key=lambda p: (p.sweep, p.protocol, p.dataset, _sort_key(p.value)))


def collect_sweep(tracking_uri, name: str, groups: set) -> list[SweepPoint]:
    """What ``bench sweep`` draws: exactly the ``groups`` it ran or reused, and for the sweep's
    datasets it did not touch (a max-length sweep run one dataset at a time, with its own
    grid) their points in the store, so a figure keeps every dataset's line."""
    ours = collect(tracking_uri, groups=groups)
    touched = {p.dataset for p in ours}
    return ours + [p for p in collect(tracking_uri, sweeps=[name]) if p.dataset not in touched]


def _newest_configuration(points) -> list:
    """Per (sweep, protocol, dataset), the points whose fixed keys are those of the newest point."""
    latest: dict = {}
    for p in points:
        key = (p.sweep, p.protocol, p.dataset)
        if key not in latest or p.start_time > latest[key].start_time:
            latest[key] = p
    return [p for p in points if p.fixed == latest[(p.sweep, p.protocol, p.dataset)].fixed]


def _point(parent, runs) -> SweepPoint:
    from recboard.benchmarks.evaluation.significance import mean_and_std

    tags = parent.data.tags
    runs = sorted(runs, key=lambda r: int(r.data.tags.get("recboard.seed", 0)))
    labels = sorted({tracking.metric_label(k[len("test/"):]) for r in runs for k in r.data.metrics
                     if k.startswith("test/")})
    metrics = {}
    for label in labels:
        values = [r.data.metrics.get(f"test/{tracking.metric_key(label)}") for r in runs]
        if None not in values:
            metrics[label] = mean_and_std(values)
    times = [r.data.metrics["train_time_s"] for r in runs if "train_time_s" in r.data.metrics]
    return SweepPoint(
        sweep=tags["recboard.sweep"], model=tags.get("recboard.model", "?"), param=tags.get("recboard.sweep_param", "?"),
        protocol=tags.get("recboard.protocol", "?"), dataset=tags.get("recboard.dataset", "?"),
        value=tags.get("recboard.sweep_value", "?"), metrics=metrics,
        seeds=[int(r.data.tags.get("recboard.seed", 0)) for r in runs],
        device=", ".join(sorted({r.data.tags.get("recboard.device", "?") for r in runs})),
        git_commit=tags.get("recboard.git_commit", "unknown"),
        train_time_s=sum(times) / len(times) if times else None,
        group_run_id=parent.info.run_id, start_time=parent.info.start_time,
        fixed=tuple(sorted((k, v) for k, v in parent.data.params.items() if k != tags.get("recboard.sweep_param"))))


def sections(points: list) -> list[Section]:
    """Points grouped by (sweep, protocol), in the order ``collect`` sorted them."""
    out: dict = {}
    for p in points:
        key = (p.sweep, p.protocol)
        if key not in out:
            out[key] = Section(p.sweep, p.model, p.param, p.protocol, [])
        out[key].points.append(p)
    return list(out.values())


# --------------------------------------------------------------------------- draw

def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _sort_key(value: str):
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


def _lines(section: Section) -> list:
    """(dataset, its points in value order), datasets in the registry's order."""
    from recboard.datasets.registry import DATASETS

    order = {name: i for i, name in enumerate(DATASETS)}
    datasets = sorted({p.dataset for p in section.points}, key=lambda d: (order.get(d, len(order)), d))
    return [(d, sorted((p for p in section.points if p.dataset == d), key=lambda p: _sort_key(p.value)))
            for d in datasets]


def _x_positions(ax, values: list) -> dict:
    """x coordinate of each value. Numbers go on a numeric axis, base 2 where they span a
    factor of four or more in whole numbers (hidden size 16..256, max length 10..200: each
    doubling as wide as the next); anything else is an evenly spaced category."""
    numbers = {v: _number(v) for v in values}
    if None in numbers.values():
        order = sorted(set(values))
        ax.set_xticks(range(len(order)), order)
        return {v: float(order.index(v)) for v in values}
    ticks = sorted(set(numbers.values()))
    if ticks[0] > 0 and all(t.is_integer() for t in ticks) and ticks[-1] >= 4 * ticks[0]:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    return numbers


def figure(section: Section, metric: str):
    """The matplotlib Figure of ``metric`` against the swept value, one errorbar line per dataset."""
    from recboard.benchmarks.tracking.figures import new_figure

    fig, ax = new_figure()
    x = _x_positions(ax, [p.value for p in section.points])
    for dataset, points in _lines(section):
        points = [p for p in points if metric in p.metrics]
        if points:
            ax.errorbar([x[p.value] for p in points], [p.metrics[metric][0] for p in points],
                        yerr=[p.metrics[metric][1] for p in points], marker="o", capsize=3,
                        label=DATASET_TITLES.get(dataset, dataset))
    ax.set_xlabel(section.param)
    ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
    ax.set_title(f"{section.model}: test {metric} vs {section.param}\n"
                 f"{PROTOCOL_TITLES.get(section.protocol, section.protocol)}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def draw(section: Section, out_dir) -> list[tuple[str, Path]]:
    """One PNG per metric of ``section`` into ``out_dir``: [(metric, path)]."""
    from recboard.benchmarks.tracking.figures import save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._@+-]", "_", f"{section.sweep}-{section.protocol}")
    return [(m, save_figure(figure(section, m), out_dir / f"{stem}-{tracking.metric_key(m)}.png"))
            for m in section.metrics]


# --------------------------------------------------------------------------- markdown

def points_table(section: Section) -> str:
    """The numbers behind a section's figures, one row per point."""
    from tabulate import tabulate

    metrics = section.metrics
    rows = []
    for dataset, points in _lines(section):
        for p in points:
            cells = [_mean_std(p.metrics.get(m), len(p.seeds)) for m in metrics]
            rows.append([DATASET_TITLES.get(dataset, dataset), p.value, *cells, ",".join(map(str, p.seeds)),
                         duration(p.train_time_s), p.device,
                         run_cell({"run_id": p.group_run_id, "git_commit": p.git_commit})])
    headers = ["Dataset", section.param, *metrics, "Seeds", "Train time / seed", "Device", "Group run @ commit"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _mean_std(stats, n_seeds: int) -> str:
    if stats is None:
        return "—"
    mean, std = stats
    return f"{mean:.4f} ± {std:.4f}" if n_seeds > 1 else f"{mean:.4f}"


def markdown(drawn: list, link_dir, level: str = "####") -> list[str]:
    """Lines for [(section, [(metric, png)])]: a heading, the figures (links relative to
    ``link_dir``, where the markdown file lives) and the points' table under them."""
    lines = []
    for section, pngs in drawn:
        title = PROTOCOL_TITLES.get(section.protocol, section.protocol)
        lines += [f"{level} {section.model}: {section.param}, {title} — sweep `{section.sweep}`", ""]
        for metric, png in pngs:
            link = Path(os.path.relpath(Path(png).resolve(), Path(link_dir).resolve())).as_posix()
            lines.append(f"![{section.model}: test {metric} vs {section.param}]({link})")
        lines += ["", points_table(section), ""]
    return lines


def leaderboard_section(tracking_uri, figures_dir, link_dir, datasets=None) -> list[str]:
    """The leaderboard's sensitivity section: every sweep in the store(s) drawn into
    ``figures_dir``; no lines when there is no sweep."""
    points = [p for p in collect(tracking_uri) if datasets is None or p.dataset in datasets]
    if not points:
        return []
    drawn = [(section, draw(section, figures_dir)) for section in sections(points)]
    return [f"### {HEADING}", "", INTRO, "", *markdown(drawn, link_dir)]


def write_sweep_report(name: str, drawn: list, out_dir) -> Path:
    """``bench sweep``'s own ``sweep.md`` in ``out_dir``, beside the figures it links."""
    from recboard.datasets.files import atomic_write_text

    path = Path(out_dir) / "sweep.md"
    lines = [f"# Sweep `{name}`", "",
             "Each point is a seed group: the test metric's mean over its seeds, the error bar their sample "
             "standard deviation (ddof 1); one line per dataset. Drawn from the MLflow store by `bench sweep`; "
             "`bench leaderboard` embeds the same figures.", "", *markdown(drawn, out_dir, "##")]
    atomic_write_text(path, "\n".join(lines))
    return path
