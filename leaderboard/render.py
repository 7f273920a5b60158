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
"Sensitivity" section of the ``bench sweep`` figures, ``recboard.leaderboard.figures``; the
BERT4Rec ablation table, ``recboard.leaderboard.ablation``, where ablation runs exist; and
under a table, the ``[[gaps]]`` sentences of references.toml about its rows), csv, json and
LaTeX (``recboard.leaderboard.latex``).
The csv has one column per metric: MIND's nDCG@5 / nDCG@10 are the same measure as the
sequences' NDCG@5 / NDCG@10 (normalised DCG of the ranked list at k), so they fill the
``NDCG@5`` / ``NDCG@10`` columns and a spreadsheet can sort one column across tables;
markdown, json and LaTeX keep each protocol's own names.

MLflow is read through ``recboard.benchmarks.tracking.store``. Heavy imports (mlflow, pandas,
tabulate, scipy) happen inside the functions: the CLI imports this module for ``bench --help``.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from recboard.benchmarks.tracking import store as tracking
from recboard.leaderboard import datastats
from recboard.leaderboard.ablation import is_ablation
from recboard.leaderboard.references import References, load_references, table_metrics
from recboard.leaderboard.runs import ALL_METRICS, COMMITTED, RECORD_STORE, UNKNOWN_DATA, collect, select_best
from recboard.leaderboard.tables import (DATASET_TITLES, NO_RESULT, NOT_REPORTED, STILL_IMPROVING, Table,
                                         best_printed, build_tables, count_text, data_line, duration, number,
                                         run_cell)

# --------------------------------------------------------------------------- render

def _cell(row, metric: str, best: dict, marked: bool) -> str:
    value = number(row.get(metric))
    if value is None:
        return NO_RESULT
    text = f"{value:.4f}"
    shown = f"**{text}**" if best.get(metric) == text else text
    std = number(row.get(f"{metric} std"))
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
        train = row.get("train_time_s") if number(row.get("train_time_s")) is not None else row.get("wall_time_s")
        times = f"{duration(train)} / {duration(row.get('wall_time_s'))}"
        label = name + (f" {STILL_IMPROVING}" if str(row.get("still_improving")) == "True" else "")
        body.append([label, source_of(row, "this repo"), *cells, str(int(row.get("n_seeds") or 1)), times,
                     row.get("device") or "", count_text(row.get("n_params")), run_cell(row)])
    for ref in table.published:
        body.append([ref.model, f"published [{ref.citation}]"]
                    + [ref.text.get(m, NOT_REPORTED) for m in metrics] + blank)
    headers = ["Model", "Source", *metrics, "Seeds", "Train / wall", "Device", "Params", "Run @ commit"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * (len(metrics) + 2) + ("left", "right", "left"))


RESCORED = "re-scored"


def source_of(row, ours: str) -> str:
    """``ours``, or ``ours, re-scored`` for a ``bench eval`` row (trained under another protocol)."""
    return f"{ours}, {RESCORED}" if row.get("kind") == "eval" else ours


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
           sensitivity: list = (), ablations: list = ()) -> str:
    """The leaderboard as markdown, csv, json or latex. ``df`` comes from ``collect()``;
    ``references``: a ``References``, a path to a toml file, None (the packaged
    references.toml) or False (no published rows); ``models``: model names that get a
    "—" row where they have no result (default: every model with a run in ``df``);
    ``datasets``: only these datasets' tables; ``significance``: test the best row of each
    column against the others (reads the runs' saved test examples); ``sensitivity`` and
    ``ablations``: markdown lines placed after the tables (``figures.leaderboard_section``,
    ``ablation.markdown_section``). Ablated models ("w/o PE", ...) have no row in the main
    tables: they are the ablation table's."""
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    df = df[~df["variant"].map(is_ablation)] if len(df) else df
    if references is None or isinstance(references, (str, os.PathLike)):
        references = load_references(references)
    elif references is False:
        references = References()
    commit = commit or tracking.git_commit()
    date = date or datetime.now(timezone.utc).date().isoformat()
    tables = build_tables(df, references, models, significance)
    if fmt == "markdown":
        return _render_markdown(tables, references, commit, date, [*ablations, *sensitivity])
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
        rec = {**key, "model": name, "source": source_of(row, "ours"), "citation": None}
        rec.update({m: number(row.get(m)) for m in metrics})
        rec.update({f"{m} std": number(row.get(f"{m} std")) for m in metrics})
        rec.update({"n_seeds": int(row.get("n_seeds") or 1), "selected_by": row.get("selected_by"),
                    "valid": number(row.get("valid")), "train_time_s": number(row.get("train_time_s")),
                    "wall_time_s": number(row.get("wall_time_s")), "device": row.get("device"),
                    "n_params": number(row.get("n_params")), "run_id": row.get("run_id"),
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
             "they were measured on. A model has a row where a run of ours exists for that data and "
             f"protocol. {NOT_REPORTED}: not reported by the source; {STILL_IMPROVING}: the run (or a seed "
             "of the group) stopped while its validation metric was still improving, so the number "
             f"understates the model; {RESCORED}: the saved best weights of runs trained and early-stopped "
             "under another protocol (selected on its validation split), scored on this one by `bench eval` "
             "without training; their train time is the source runs', their wall time the scoring's.", ""]
    if not tables:
        lines += ["No finished runs with test metrics were found in the records or the MLflow store.", ""]
    cited = set()
    for table in tables:
        selected = sorted({str(r["selected_by"]) for r in table.ours.values() if r is not None})
        lines += [f"### {table.title}", "", data_line(table), "",
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
    lines += [f"Generated by `bench leaderboard` from the records in `leaderboard/records/` and MLflow runs; "
              f"recboard commit `{commit}`, {date}.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- build

FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json", ".tex": "latex"}


def build(fmt: str = "markdown", tracking_uri: str | None = None, references=None,
          commit: str | None = None, date: str | None = None, models=None, datasets=None,
          figures_dir=None, link_dir=".", records=COMMITTED) -> str:
    """``collect()`` + ``render()``: the leaderboard text from the records (``records``, a
    folder; None: none; default the committed ``leaderboard/records/``) and the MLflow store(s). Built from records alone, the footer names
    the newest row's commit and date instead of today's, so a fresh clone rebuilds the
    committed LEADERBOARD.md byte for byte. With
    ``figures_dir``, markdown gains the sensitivity figures of every ``bench sweep`` in the
    store(s), drawn into that folder and linked relative to ``link_dir`` (the folder of the
    markdown file)."""
    sensitivity = []
    if fmt == "markdown" and figures_dir is not None:
        from recboard.leaderboard.figures import leaderboard_section
        sensitivity = leaderboard_section(tracking_uri, figures_dir, link_dir, datasets)
    everything = collect(tracking_uri, best_only=False, records=records, sweeps=True)
    df = select_best(everything[everything["sweep"].isna()])
    ablations = []
    if fmt == "markdown":
        from recboard.leaderboard.ablation import markdown_section
        ablations = markdown_section(everything if datasets is None else
                                     everything[everything["dataset"].isin(list(datasets))])
    if commit is None and date is None and len(df) and df["store"].astype(str).str.startswith(RECORD_STORE).all():
        newest = df.sort_values(["start_time", "run_id"]).iloc[-1]
        commit, date = str(newest["git_commit"]), newest["start_time"].date().isoformat()
    return render(df, references, fmt=fmt, commit=commit, date=date, models=models,
                  datasets=datasets, sensitivity=sensitivity, ablations=ablations)
