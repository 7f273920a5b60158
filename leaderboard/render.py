"""Paper-style leaderboards from the MLflow runs ``bench run`` / ``bench tune`` / ``bench eval``
recorded.

``recboard.leaderboard.runs.collect()`` gives one row per run or seed group, the best per
table chosen on validation. ``render()`` lays them out as one table per (dataset, data
identity, protocol): protocols are never mixed, because sampled and full-ranking numbers are
not comparable, and two different files of one dataset never share a table. Published
numbers from ``references.toml`` (``recboard.leaderboard.references``) sit only beside the
data they were measured on. A seed group shows ``mean ± std`` and its number of seeds; the
best value of a column is bold and carries † when a paired test on the same test users
finds it better than the runner-up (p < 0.05, Holm-corrected). ``build()`` does both;
``bench leaderboard`` writes the text with ``recboard.datasets.files.atomic_write_text``.

Formats: markdown (with a "Datasets" section of the data's statistics,
``recboard.leaderboard.datastats``; when ``build`` is given a figures folder, a
"Sensitivity" section of the ``bench sweep`` figures, ``recboard.leaderboard.figures``; and
under a table, the ``[[gaps]]`` sentences of references.toml about its rows), csv, json and
LaTeX (``recboard.leaderboard.latex``).
The csv has one column per metric: MIND's nDCG@5 / nDCG@10 are the same measure as the
sequences' NDCG@5 / NDCG@10 (normalised DCG of the ranked list at k), so they fill the
``NDCG@5`` / ``NDCG@10`` columns and a spreadsheet can sort one column across tables;
markdown, json and LaTeX keep each protocol's own names.

MLflow is read through ``recboard.benchmarks.tracking``. Heavy imports (mlflow, pandas,
tabulate, scipy) happen inside the functions: the CLI imports this module for ``bench --help``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

from recboard.benchmarks import tracking
from recboard.benchmarks.config import PROTOCOLS
from recboard.leaderboard import datastats
from recboard.leaderboard.references import References, load_references, table_metrics
from recboard.leaderboard.runs import ALL_METRICS, UNKNOWN_DATA, collect, row_label, significance_marks

PROTOCOL_TITLES = {
    "full": "full ranking (all items, seen items masked)",
    "sampled-uni100": "sampled ranking (target + 100 uniformly sampled negatives)",
    "sampled-pop100": "sampled ranking (target + 100 popularity-sampled negatives)",
    "impressions": "impression ranking (each impression's shown candidates)",
}
DATASET_TITLES = {
    "ml-1m": "ML-1m", "beauty": "Beauty", "mind_small": "MIND-small", "mind_large": "MIND-large",
    "mind_demo": "MIND-demo", "synthetic_seq": "Synthetic sequences",
    "synthetic_mind": "Synthetic MIND",
    "synthetic_mind_cold": "Synthetic news, cold start (test news unseen in training)",
}
NO_RESULT = "—"       # our model has no finished run for this dataset / protocol
NOT_REPORTED = "n/r"  # the published source does not report this metric


# --------------------------------------------------------------------------- render

@dataclass
class Table:
    dataset: str
    identity: str
    protocol: str
    data: dict          # users / items / interactions / identity of the runs' prepared data
    ours: dict          # row label -> the selected row, or None ("—")
    published: list     # References measured on this data and protocol
    withheld: int       # published rows of this dataset and protocol left out: other data
    marks: dict         # metric -> label of the row that is significantly best (†)
    title: str
    gaps: list = field(default_factory=list)   # references.Gap sentences about rows shown


def _order(names, registry: dict) -> list:
    """Registered models in registry order (each variant after its model), then the rest."""
    index = {name: i for i, name in enumerate(registry)}
    return sorted(set(names), key=lambda n: (index.get(n.split(" [")[0], len(index)), n))


def _data_of(rows, identity: str) -> dict:
    first = rows.iloc[0]
    data = {"identity": identity}
    for key in ("users", "items", "interactions"):
        value = _num(first.get(f"data_{key}"))
        if value is not None:
            data[key] = int(value)
    return data


def _table_keys(df) -> list:
    from recboard.datasets.registry import DATASETS

    dataset_order = {name: i for i, name in enumerate(DATASETS)}
    keys = {(d, i, p) for d, i, p in zip(df["dataset"], df["identity"], df["protocol"])}
    return sorted(keys, key=lambda k: (dataset_order.get(k[0], len(dataset_order)), k[0], k[1] == UNKNOWN_DATA,
                                       k[1], PROTOCOLS.index(k[2]) if k[2] in PROTOCOLS else len(PROTOCOLS)))


def _tables(df, references: References, models, significance: bool) -> list:
    """One ``Table`` per (dataset, data identity, protocol), in a stable order."""
    from recboard.models.registry import MODELS

    df = df.assign(label=[row_label(r) for _, r in df.iterrows()]) if len(df) else df.assign(label=[])
    names = _order(models if models is not None else df["label"].dropna(), MODELS)
    identities = df.groupby("dataset")["identity"].nunique().to_dict() if len(df) else {}
    tables = []
    for dataset, identity, protocol in _table_keys(df):
        rows = df[(df["dataset"] == dataset) & (df["identity"] == identity) & (df["protocol"] == protocol)]
        ours = {name: rows[rows["label"] == name].iloc[0] if (rows["label"] == name).any() else None
                for name in _order(list(names) + list(rows["label"]), MODELS)}
        data = _data_of(rows, identity)
        candidates = [r for r in references.results if r.dataset == dataset and r.protocol == protocol]
        published = candidates if references.measured_on(dataset, data) else []
        shown = {k: v for k, v in ours.items() if v is not None}
        marks = significance_marks(shown, table_metrics(protocol)) if significance and len(shown) > 1 else {}
        title = _title(dataset, protocol) + (f" — data `{identity[:8]}`" if identities.get(dataset, 1) > 1 else "")
        gaps = [g for g in references.gaps if (g.dataset, g.protocol) == (dataset, protocol) and g.model in shown]
        tables.append(Table(dataset, identity, protocol, data, ours, published,
                            len(candidates) - len(published), marks, title, gaps if published else []))
    return tables


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _duration(seconds) -> str:
    seconds = _num(seconds)
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _count(n) -> str:
    n = _num(n)
    if n is None:
        return ""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    return f"{n:.0f}"


def _title(dataset: str, protocol: str) -> str:
    return f"{DATASET_TITLES.get(dataset, dataset)} — {PROTOCOL_TITLES.get(protocol, protocol)}"


def _data_line(table: Table) -> str:
    d = table.data
    if table.identity == UNKNOWN_DATA:
        return "Data: not recorded (runs made before recboard recorded data identities)."
    size = ", ".join(f"{d[k]:,} {k}" for k in ("users", "items", "interactions") if k in d)
    line = f"Data: {size} (identity `{table.identity}`)."
    if table.withheld:
        line += (f" {table.withheld} published row(s) for this dataset were measured on other data "
                 "(see `[data]` in references.toml) and are not shown.")
    return line


def best_printed(rows, metrics) -> dict:
    """metric -> the best value of ``rows`` as printed (4 decimals), where two or more rows
    have one: the cell that is bold (ties at the printed precision are all bold)."""
    best = {}
    for m in metrics:
        printed = [f"{v:.4f}" for v in (_num(r.get(m)) for r in rows) if v is not None]
        if len(printed) >= 2:
            best[m] = max(printed, key=float)
    return best


def _cell(row, metric: str, best: dict, marked: bool) -> str:
    value = _num(row.get(metric))
    if value is None:
        return NO_RESULT
    text = f"{value:.4f}"
    shown = f"**{text}**" if best.get(metric) == text else text
    std = _num(row.get(f"{metric} std"))
    if int(row.get("n_seeds") or 1) > 1 and std is not None:
        shown += f" ± {std:.4f}"
    return shown + ("†" if marked else "")


def _markdown_table(table: Table) -> str:
    from tabulate import tabulate

    metrics = table_metrics(table.protocol)
    shown = {name: row for name, row in table.ours.items() if row is not None}
    best = best_printed(shown.values(), metrics)
    blank = ["", "", "", "", ""]
    body = []
    for name, row in table.ours.items():
        if row is None:
            body.append([name, "this repo"] + [NO_RESULT] * len(metrics) + blank)
            continue
        cells = [_cell(row, m, best, table.marks.get(m) == name) for m in metrics]
        train = row.get("train_time_s") if _num(row.get("train_time_s")) is not None else row.get("wall_time_s")
        times = f"{_duration(train)} / {_duration(row.get('wall_time_s'))}"
        body.append([name, "this repo"] + cells + [str(int(row.get("n_seeds") or 1)), times, row.get("device") or "",
                                                   _count(row.get("n_params")), _run_cell(row)])
    for ref in table.published:
        body.append([ref.model, f"published [{ref.citation}]"]
                    + [ref.text.get(m, NOT_REPORTED) for m in metrics] + blank)
    headers = ["Model", "Source", *metrics, "Seeds", "Train / wall", "Device", "Params", "Run @ commit"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * (len(metrics) + 2) + ("left", "right", "left"))


def _run_cell(row) -> str:
    """Short MLflow run id (a seed group's parent run) and the commit the run was made from."""
    commit = str(row.get("git_commit") or "unknown")
    short = commit if commit == "unknown" else commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
    return f"`{str(row['run_id'])[:8]}` @ `{short}`"


SAMPLED_NOTE = (
    "Sampled and full-ranking numbers are not comparable, so they never share a table. "
    "Ranking the target among 100 sampled negatives instead of the whole catalogue inflates "
    "every metric, compresses the differences between models and can even reverse their order: "
    "Krichene & Rendle (\"On Sampled Metrics for Item Recommendation\", KDD'20) show sampled "
    "metrics are inconsistent with the exact ones. Popularity-sampled negatives are harder than uniform ones, which is why the same model "
    "scores lower under sampled-pop100 than under sampled-uni100.")
CSV_NAMES = {f"nDCG@{k}{s}": f"NDCG@{k}{s}" for k in (5, 10) for s in ("", " std")}  # see the docstring
CSV_METRICS = [m for m in ALL_METRICS if m not in CSV_NAMES]
CSV_COLUMNS = ["dataset", "identity", "protocol", "model", "source", "citation", *CSV_METRICS,
               *[f"{m} std" for m in CSV_METRICS], "n_seeds", "selected_by", "valid", "train_time_s",
               "wall_time_s", "device", "n_params", "run_id", "git_commit"]


def render(df, references=None, fmt: str = "markdown", commit: str | None = None,
           date: str | None = None, models=None, datasets=None, significance: bool = True,
           sensitivity: list = ()) -> str:
    """The leaderboard as markdown, csv, json or latex. ``df`` comes from ``collect()``;
    ``references``: a ``References``, a path to a toml file, None (the packaged
    references.toml) or False (no published rows); ``models``: model names that get a
    "—" row where they have no result (default: every model with a run in ``df``);
    ``datasets``: only these datasets' tables; ``significance``: test the best row of each
    column against the others (reads the runs' saved test examples); ``sensitivity``:
    markdown lines placed after the tables (``figures.leaderboard_section``)."""
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    if references is None or isinstance(references, (str, os.PathLike)):
        references = load_references(references)
    elif references is False:
        references = References()
    commit = commit or tracking.git_commit()
    date = date or datetime.now(timezone.utc).date().isoformat()
    tables = _tables(df, references, models, significance)
    if fmt == "markdown":
        return _render_markdown(tables, references, commit, date, sensitivity)
    if fmt == "csv":
        import pandas as pd
        records = [{CSV_NAMES.get(k, k): v for k, v in r.items()} for t in tables for r in _records(t)]
        return pd.DataFrame(records, columns=CSV_COLUMNS).to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        out = {"commit": commit, "date": date, "tables": [], "citations": references.citations}
        for t in tables:
            rows = [{k: v for k, v in r.items() if v is not None and k not in ("dataset", "protocol", "identity")}
                    for r in _records(t)]
            out["tables"].append({"dataset": t.dataset, "identity": t.identity, "protocol": t.protocol,
                                  "title": t.title, "data": t.data, "metrics": list(table_metrics(t.protocol)),
                                  "significant": t.marks, "rows": rows})
        return json.dumps(out, indent=2, ensure_ascii=False) + "\n"
    if fmt == "latex":
        from recboard.leaderboard.latex import render_latex  # it imports this module's helpers
        return render_latex(tables, references, commit, date)
    raise ValueError(f"unknown leaderboard format {fmt!r}; expected markdown, csv, json or latex")


def _records(table: Table) -> list:
    """Flat rows (ours, then published) for csv / json; models without a run are left out."""
    metrics = table_metrics(table.protocol)
    key = {"dataset": table.dataset, "identity": table.identity, "protocol": table.protocol}
    records = []
    for name, row in table.ours.items():
        if row is None:
            continue
        rec = {**key, "model": name, "source": "ours", "citation": None}
        rec.update({m: _num(row.get(m)) for m in metrics})
        rec.update({f"{m} std": _num(row.get(f"{m} std")) for m in metrics})
        rec.update({"n_seeds": int(row.get("n_seeds") or 1), "selected_by": row.get("selected_by"),
                    "valid": _num(row.get("valid")), "train_time_s": _num(row.get("train_time_s")),
                    "wall_time_s": _num(row.get("wall_time_s")), "device": row.get("device"),
                    "n_params": _num(row.get("n_params")), "run_id": row.get("run_id"),
                    "git_commit": row.get("git_commit")})
        records.append(rec)
    for ref in table.published:
        records.append({**key, "model": ref.model, "source": "published", "citation": ref.citation,
                        **{m: ref.metrics.get(m) for m in metrics}})
    return records


def _render_markdown(tables, references: References, commit: str, date: str, sensitivity=()) -> str:
    lines = ["# recboard leaderboard", "",
             "Best configuration per model, chosen on the validation split; the numbers are test "
             "metrics (leave-one-out: last item = test, second last = validation; MIND: the official "
             "dev split), as mean ± sample std over seeds where a configuration was run with several. "
             "**Bold**: best of our rows; †: better than the runner-up by a paired t-test on the same "
             "test users (p < 0.05, Holm-corrected over the rows of the table). Published rows are "
             "quoted from the cited sources, were not re-run here, and appear only beside the data "
             f"they were measured on. {NO_RESULT}: no finished run (the model cannot serve this "
             f"dataset or was not run); {NOT_REPORTED}: not reported by the source.", ""]
    if not tables:
        lines += ["No finished runs with test metrics were found in the MLflow store.", ""]
    cited = set()
    for table in tables:
        selected = sorted({str(r["selected_by"]) for r in table.ours.values() if r is not None})
        lines += [f"### {table.title}", "", _data_line(table), "",
                  f"Selected by validation {', '.join(selected)} (higher is better).", "",
                  _markdown_table(table), ""]
        lines += [line for gap in table.gaps for line in (f"*{gap.model}*: {gap.text}", "")]
        cited.update(ref.citation for ref in table.published)
    lines += sensitivity
    lines += datastats.markdown_section(tables, DATASET_TITLES, UNKNOWN_DATA)
    cited.add("krichene2020sampled")  # the note below
    lines += ["### Notes", "", SAMPLED_NOTE, ""]
    cited = [key for key in references.citations if key in cited]
    if cited:
        lines += ["### References", ""]
        for key in cited:
            cite = references.citations[key]
            url = f" <{cite['url']}>" if cite.get("url") else ""
            lines.append(f"- [{key}] {cite['text']}{url}")
        lines.append("")
    lines += [f"Generated by `bench leaderboard` from MLflow runs; recboard commit `{commit}`, {date}.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- build

FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json", ".tex": "latex"}


def build(fmt: str = "markdown", tracking_uri: str | None = None, references=None,
          commit: str | None = None, date: str | None = None, models=None, datasets=None,
          figures_dir=None, link_dir=".") -> str:
    """``collect()`` + ``render()``: the leaderboard text from the MLflow store. With
    ``figures_dir``, markdown gains the sensitivity figures of every ``bench sweep`` in the
    store(s), drawn into that folder and linked relative to ``link_dir`` (the folder of the
    markdown file)."""
    sensitivity = []
    if fmt == "markdown" and figures_dir is not None:
        from recboard.leaderboard.figures import leaderboard_section
        sensitivity = leaderboard_section(tracking_uri, figures_dir, link_dir, datasets)
    return render(collect(tracking_uri), references, fmt=fmt, commit=commit, date=date, models=models,
                  datasets=datasets, sensitivity=sensitivity)
