"""Paper-style leaderboards from the MLflow runs ``bench run`` / ``bench tune`` recorded.

``collect()`` reads FINISHED runs (kind "run" or "trial") that have test metrics and keeps
the best run per (dataset, protocol, model), chosen by the *validation* metric the run was
early-stopped on (``best_valid/<recboard.metric>``), never by test. ``render()`` turns that
into one table per (dataset, protocol) -- protocols are never mixed in one table, because
sampled and full-ranking numbers are not comparable -- with published numbers from
``references.toml`` (read by ``recboard.leaderboard.references``) beside ours. ``build()``
does both; ``bench leaderboard`` writes the text with ``recboard.datasets.files.atomic_write_text``.

MLflow is read through ``recboard.benchmarks.tracking``. Heavy imports (mlflow, pandas,
tabulate) happen inside the functions: the CLI imports this
module for ``bench --help``.
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone

from recboard.benchmarks.config import IMPRESSION_METRICS, PROTOCOLS, SEQUENCE_METRICS
from recboard.benchmarks import tracking
from recboard.leaderboard.references import References, load_references, table_metrics

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
}
ALL_METRICS = SEQUENCE_METRICS + tuple(m for m in IMPRESSION_METRICS if m not in SEQUENCE_METRICS)
RUN_COLUMNS = ["run_id", "dataset", "protocol", "task", "model", "kind", "device", "git_commit",
               "selected_by", "valid", "train_time_s", "wall_time_s", "n_params", "best_epoch",
               "start_time"]
NO_RESULT = "—"       # our model has no finished run for this dataset / protocol
NOT_REPORTED = "n/r"  # the published source does not report this metric


# --------------------------------------------------------------------------- collect

def collect(tracking_uri=None, best_only: bool = True):
    """Finished runs with test metrics -> one row per run (``best_only``: per dataset,
    protocol and model, the run with the best validation score). ``tracking_uri`` may be a
    list: stores brought back from several machines are read as one."""
    import pandas as pd

    if tracking_uri is None:
        tracking_uri = tracking.tracking_uri()
    uris = [tracking_uri] if isinstance(tracking_uri, str) else list(tracking_uri)
    frames = [tracking.search_runs(tracking.tag_filter({"recboard.kind": kind}, status="FINISHED"), uri,
                                   output_format="pandas")
              for uri in uris for kind in ("run", "trial")]
    raw = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    runs = _tidy(raw)
    return select_best(runs) if best_only else runs


def _tidy(raw):
    """MLflow's wide search result -> our columns (test metrics named by label, '@')."""
    import pandas as pd

    if raw is None or raw.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + list(ALL_METRICS))
    def tag(name):
        return raw.get(f"tags.recboard.{name}", pd.Series([None] * len(raw)))

    def metric(name):
        return pd.to_numeric(raw.get(f"metrics.{name}", pd.Series([math.nan] * len(raw))))

    out = pd.DataFrame({
        "run_id": raw["run_id"], "dataset": tag("dataset"), "protocol": tag("protocol"),
        "task": tag("task"), "model": tag("model"), "kind": tag("kind"), "device": tag("device"),
        "git_commit": tag("git_commit"), "selected_by": tag("metric"),
        "train_time_s": metric("train_time_s"), "wall_time_s": metric("wall_time_s"),
        "n_params": metric("n_params"), "best_epoch": metric("best_epoch"),
        "start_time": raw["start_time"],
    })
    for column in raw.columns:
        for prefix in ("metrics.test/", "metrics.best_valid/"):
            if column.startswith(prefix):
                label = tracking.metric_label(column[len(prefix):])
                name = label if prefix.endswith("test/") else f"best_valid/{label}"
                out[name] = pd.to_numeric(raw[column])
    tests = [m for m in ALL_METRICS if m in out.columns]
    out = out[out[tests].notna().any(axis=1)] if tests else out.iloc[0:0]
    return out.reset_index(drop=True)


def select_best(runs):
    """Best run per (dataset, protocol, model) by the validation metric the runs were
    early-stopped on. If a group's runs were selected by different metrics, the metric most
    of them used decides (runs without that validation metric drop out)."""
    import pandas as pd

    if runs.empty:
        return runs.assign(valid=pd.Series(dtype=float))
    keep = []
    for _, group in runs.groupby(["dataset", "protocol", "model"], sort=True, dropna=False):
        counts = group["selected_by"].value_counts()
        metric = sorted(counts.index[counts == counts.max()])[0] if len(counts) else None
        score = group.get(f"best_valid/{metric}") if metric else None
        if score is None or score.isna().all():
            continue
        ranked = group.assign(valid=score, selected_by=metric).dropna(subset=["valid"])
        ranked = ranked.sort_values(["valid", "start_time", "run_id"], ascending=[False, False, True])
        keep.append(ranked.iloc[0])
    return pd.DataFrame(keep).reset_index(drop=True) if keep else runs.iloc[0:0].assign(valid=[])


# --------------------------------------------------------------------------- render

def _order(names, registry: dict) -> list:
    index = {name: i for i, name in enumerate(registry)}
    return sorted(set(names), key=lambda n: (index.get(n, len(index)), n))


def _tables(df, references: References, models):
    """[(dataset, protocol, our rows by model, published references)] in a stable order."""
    from recboard.datasets.registry import DATASETS
    from recboard.models.registry import MODELS

    keys = {(d, p) for d, p in zip(df["dataset"], df["protocol"])}
    dataset_order = {name: i for i, name in enumerate(DATASETS)}
    keys = sorted(keys, key=lambda k: (dataset_order.get(k[0], len(dataset_order)), k[0],
                                       PROTOCOLS.index(k[1]) if k[1] in PROTOCOLS else len(PROTOCOLS)))
    names = _order(models if models is not None else df["model"].dropna(), MODELS)
    tables = []
    for dataset, protocol in keys:
        rows = df[(df["dataset"] == dataset) & (df["protocol"] == protocol)]
        ours = {name: rows[rows["model"] == name].iloc[0] if (rows["model"] == name).any() else None
                for name in _order(list(names) + list(rows["model"]), MODELS)}
        published = [r for r in references.results if r.dataset == dataset and r.protocol == protocol]
        tables.append((dataset, protocol, ours, published))
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


def _markdown_table(protocol, ours, published) -> str:
    from tabulate import tabulate

    metrics = table_metrics(protocol)
    shown = {name: row for name, row in ours.items() if row is not None}
    best = {}
    for m in metrics:  # bold the best of OUR rows, at the printed precision
        values = [f"{v:.4f}" for v in (_num(r.get(m)) for r in shown.values()) if v is not None]
        if len(values) >= 2:
            best[m] = max(values, key=float)
    body = []
    for name, row in ours.items():
        if row is None:
            body.append([name, "this repo"] + [NO_RESULT] * len(metrics) + ["", "", "", ""])
            continue
        cells = []
        for m in metrics:
            v = _num(row.get(m))
            text = NO_RESULT if v is None else f"{v:.4f}"
            cells.append(f"**{text}**" if best.get(m) == text else text)
        train = row.get("train_time_s") if _num(row.get("train_time_s")) is not None else row.get("wall_time_s")
        times = f"{_duration(train)} / {_duration(row.get('wall_time_s'))}"
        body.append([name, "this repo"] + cells + [times, row.get("device") or "",
                                                   _count(row.get("n_params")), _run_cell(row)])
    for ref in published:
        body.append([ref.model, f"published [{ref.citation}]"]
                    + [ref.text.get(m, NOT_REPORTED) for m in metrics] + ["", "", "", ""])
    headers = ["Model", "Source", *metrics, "Train / wall", "Device", "Params", "Run @ commit"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * len(metrics) + ("right", "left", "right", "left"))


def _run_cell(row) -> str:
    """Short MLflow run id and the recboard commit the run was made from."""
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


def render(df, references=None, fmt: str = "markdown", commit: str | None = None,
           date: str | None = None, models=None, datasets=None) -> str:
    """The leaderboard as markdown, csv or json. ``df`` comes from ``collect()``;
    ``references``: a ``References``, a path to a toml file, None (the packaged
    references.toml) or False (no published rows); ``models``: model names that get a
    "—" row where they have no result (default: every model with a run in ``df``);
    ``datasets``: only these datasets' tables."""
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    if references is None or isinstance(references, (str, os.PathLike)):
        references = load_references(references)
    elif references is False:
        references = References()
    commit = commit or tracking.git_commit()
    date = date or datetime.now(timezone.utc).date().isoformat()
    tables = _tables(df, references, models)
    if fmt == "markdown":
        return _render_markdown(tables, references, commit, date)
    records = _records(tables)
    if fmt == "csv":
        import pandas as pd
        columns = ["dataset", "protocol", "model", "source", "citation", *ALL_METRICS, "selected_by",
                   "valid", "train_time_s", "wall_time_s", "device", "n_params", "run_id", "git_commit"]
        return pd.DataFrame(records, columns=columns).to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        out = {"commit": commit, "date": date, "tables": [], "citations": references.citations}
        for dataset, protocol, _, _ in tables:
            rows = [{k: v for k, v in r.items() if v is not None and k not in ("dataset", "protocol")}
                    for r in records if r["dataset"] == dataset and r["protocol"] == protocol]
            out["tables"].append({"dataset": dataset, "protocol": protocol, "title": _title(dataset, protocol),
                                  "metrics": list(table_metrics(protocol)), "rows": rows})
        return json.dumps(out, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown leaderboard format {fmt!r}; expected markdown, csv or json")


def _records(tables) -> list:
    """Flat rows (ours, then published) for csv / json; models without a run are left out."""
    records = []
    for dataset, protocol, ours, published in tables:
        for name, row in ours.items():
            if row is None:
                continue
            rec = {"dataset": dataset, "protocol": protocol, "model": name, "source": "ours", "citation": None}
            rec.update({m: _num(row.get(m)) for m in table_metrics(protocol)})
            rec.update({"selected_by": row.get("selected_by"), "valid": _num(row.get("valid")),
                        "train_time_s": _num(row.get("train_time_s")), "wall_time_s": _num(row.get("wall_time_s")),
                        "device": row.get("device"), "n_params": _num(row.get("n_params")),
                        "run_id": row.get("run_id"), "git_commit": row.get("git_commit")})
            records.append(rec)
        for ref in published:
            rec = {"dataset": dataset, "protocol": protocol, "model": ref.model, "source": "published",
                   "citation": ref.citation}
            rec.update({m: ref.metrics.get(m) for m in table_metrics(protocol)})
            records.append(rec)
    return records


def _render_markdown(tables, references: References, commit: str, date: str) -> str:
    lines = ["# recboard leaderboard", "",
             "Best run per model, chosen on the validation split; the numbers are test metrics "
             "(leave-one-out: last item = test, second last = validation; MIND: the official dev "
             "split). **Bold**: best of our rows. Published rows are quoted from the cited sources "
             f"and were not re-run here. {NO_RESULT}: no finished run (the model cannot serve this "
             f"dataset or was not run); {NOT_REPORTED}: not reported by the source.", ""]
    if not tables:
        lines += ["No finished runs with test metrics were found in the MLflow store.", ""]
    cited = set()
    for dataset, protocol, ours, published in tables:
        selected = sorted({str(r["selected_by"]) for r in ours.values() if r is not None})
        lines += [f"### {_title(dataset, protocol)}", "",
                  f"Selected by validation {', '.join(selected)} (higher is better).", "",
                  _markdown_table(protocol, ours, published), ""]
        cited.update(ref.citation for ref in published)
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

FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json"}


def build(fmt: str = "markdown", tracking_uri: str | None = None, references=None,
          commit: str | None = None, date: str | None = None, models=None, datasets=None) -> str:
    """``collect()`` + ``render()``: the leaderboard text from the MLflow store."""
    return render(collect(tracking_uri), references, fmt=fmt, commit=commit, date=date, models=models,
                  datasets=datasets)
