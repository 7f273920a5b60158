"""The leaderboard's rows: MLflow runs read back, seed groups folded, the best configuration
per table chosen on validation.

``collect()`` reads FINISHED runs of kind ``run``, ``trial`` and ``eval`` (re-scored saved
models) that have test metrics, from the committed records (``leaderboard/records/``,
``recboard.benchmarks.tracking.records``) and one or several MLflow stores; a run both in
a record and in a store counts once. A record that fails its checks is reported in one line
on stderr and left out; the others still count. Runs of one seed group
(``bench run --seeds``) become one row: the mean of every metric, its sample standard
deviation (``<metric> std``) and the number of seeds. ``select_best`` then keeps, per table
key (dataset, data identity, protocol, model and variant), the row with the best *mean
validation* score the runs were early-stopped on -- never the test score, and never the
luckiest seed of a group.

The seed groups of ``bench sweep`` (runs tagged ``recboard.sweep``) are left out: each is one
point of a one-factor ablation (hidden size 16, mask ratio 0.9, ...), not a configuration
competing for a row, and the tables would otherwise pick whichever point validated best.
``recboard.leaderboard.figures`` draws them as the sensitivity figures instead.
"""
from __future__ import annotations

import math

import sys
from pathlib import Path

from recboard.benchmarks.tracking import records as R
from recboard.benchmarks.tracking import store as tracking
from recboard.benchmarks.evaluation.protocols import IMPRESSION_METRICS, SEQUENCE_METRICS

RUN_PARAMS = ("num_layers", "num_heads", "dropout", "attention_dropout")   # config keys the ablation table reads
ALL_METRICS = SEQUENCE_METRICS + tuple(m for m in IMPRESSION_METRICS if m not in SEQUENCE_METRICS)
RUN_COLUMNS = ["run_id", "store", "dataset", "identity", "data_users", "data_items", "data_interactions",
               "protocol", "task", "model", "variant", "group", "sweep", "kind", "device", "git_commit", "selected_by",
               "valid", "train_time_s", "wall_time_s", "n_params", "best_epoch", "start_time", "n_seeds", "still_improving",
               *RUN_PARAMS]
TABLE_KEY = ["dataset", "identity", "protocol"]
UNKNOWN_DATA = "unknown"   # runs recorded before data identities were
RECORDS_DIR = Path(__file__).with_name("records")   # the committed records
COMMITTED = "committed"    # ``records=COMMITTED``: RECORDS_DIR, looked up when called (tests point it elsewhere)
RECORD_STORE = "record:"   # a row's "store" when it comes from a record: "record:<path>"


def collect(tracking_uri=None, best_only: bool = True, records=COMMITTED, sweeps: bool = False):
    """Finished runs with test metrics -> one row per run or seed group (``best_only``: the
    best per table and model). ``records``: a folder of record files (None: none);
    ``tracking_uri``: one store, a list of stores brought back from several machines (read
    as one), or an empty list for the records alone; ``sweeps``: keep the ``bench sweep``
    groups too (the ablation table reads them)."""
    import pandas as pd

    frames, finished_groups = record_frames(RECORDS_DIR if records == COMMITTED else records)
    for uri in stores(tracking_uri):
        for kind in ("run", "trial", "eval"):
            found = tracking.search_runs(tracking.tag_filter({"recboard.kind": kind}, status="FINISHED"), uri,
                                         output_format="pandas")
            if len(found):
                frames.append(found.assign(store=uri))
        groups = tracking.search_runs(tracking.tag_filter({"recboard.kind": "group"}, status="FINISHED"), uri,
                                      output_format="list")
        finished_groups.update(g.info.run_id for g in groups)
    raw = pd.concat(frames, ignore_index=True).drop_duplicates("run_id") if frames else None   # records first
    runs = _tidy(raw)
    # the seeds of an interrupted group are not a group: a partial mean would be a lucky subset;
    # a sweep's points are ablations, each its own configuration, drawn in figures instead
    runs = runs[(runs["group"].isna() | runs["group"].isin(finished_groups)) & (sweeps | runs["sweep"].isna())]
    runs = runs.reset_index(drop=True)
    runs = fold_groups(runs)
    return select_best(runs) if best_only else runs


def record_frames(folder) -> tuple[list, set]:
    """([one MLflow-search-shaped frame per record], {finished seed groups' run ids})."""
    import pandas as pd

    frames, groups = [], set()
    for path in R.record_files(folder) if folder is not None else []:
        try:
            record = R.read_record(path)
        except R.RecordError as err:
            print(f"bench leaderboard: skipped {err}", file=sys.stderr)
            continue
        rows = []
        for run in record["runs"]:
            if run["tags"].get("recboard.kind") == "group":
                groups.add(run["run_id"])
                continue
            row = {"run_id": run["run_id"], "store": f"{RECORD_STORE}{path}", "status": run["status"],
                   "start_time": pd.to_datetime(run["start_time"], unit="ms", utc=True)}
            row.update({f"tags.{k}": v for k, v in run["tags"].items()})
            row.update({f"params.{k}": v for k, v in run["params"].items()})
            row.update({f"metrics.{k}": v for k, v in run["metrics"].items()})
            rows.append(row)
        frames.append(pd.DataFrame(rows))
    return frames, groups


def stores(tracking_uri=None) -> list:
    """The tracking URIs to read: ``tracking_uri`` (one or a list), else the current store."""
    if isinstance(tracking_uri, (str, type(None))):
        return [tracking_uri or tracking.tracking_uri()]
    return list(tracking_uri)


def _tidy(raw):
    """MLflow's wide search result -> our columns (test metrics named by label, '@')."""
    import pandas as pd

    if raw is None or raw.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + list(ALL_METRICS))

    def tag(name, default=None):
        return raw.get(f"tags.recboard.{name}", pd.Series([default] * len(raw))).fillna(default)

    def metric(name):
        return pd.to_numeric(raw.get(f"metrics.{name}", pd.Series([math.nan] * len(raw))))

    # a param since runs record statistics as params; runs made before then have the metric
    n_params = pd.to_numeric(raw.get("params.model.n_params", pd.Series([None] * len(raw))),
                             errors="coerce").fillna(metric("n_params"))
    out = pd.DataFrame({
        "run_id": raw["run_id"], "store": raw["store"], "dataset": tag("dataset"),
        "identity": tag("identity", UNKNOWN_DATA), "data_users": tag("data_users"), "data_items": tag("data_items"),
        "data_interactions": tag("data_interactions"), "protocol": tag("protocol"), "task": tag("task"),
        "model": tag("model"), "variant": tag("variant", ""), "group": tag("group"), "sweep": tag("sweep"),
        "kind": tag("kind"), "still_improving": tag("still_improving", "false") == "true",
        "device": tag("device"), "git_commit": tag("git_commit"), "selected_by": tag("metric"),
        "train_time_s": metric("train_time_s"), "wall_time_s": metric("wall_time_s"),
        "n_params": n_params, "best_epoch": metric("best_epoch"), "start_time": raw["start_time"], "n_seeds": 1,
        **{key: raw.get(f"params.{key}", pd.Series([None] * len(raw))) for key in RUN_PARAMS},
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


def fold_groups(runs):
    """One row per seed group: metric means, ``<metric> std`` (ddof 1) and ``n_seeds``; the
    group's parent run id stands for it. Runs outside a group pass through unchanged."""
    import pandas as pd

    if runs.empty or runs["group"].isna().all():
        return runs
    numeric = [c for c in runs.columns if c in ALL_METRICS or c.startswith("best_valid/")] + \
        ["train_time_s", "wall_time_s", "best_epoch"]
    rows = [runs[runs["group"].isna()]]
    for group_id, members in runs[runs["group"].notna()].groupby("group", sort=True):
        row = members.sort_values("start_time").iloc[[0]].copy()
        row[numeric] = members[numeric].mean().values
        for m in (c for c in ALL_METRICS if c in members.columns):
            row[f"{m} std"] = members[m].std(ddof=1) if len(members) > 1 else 0.0
        row["run_id"], row["n_seeds"] = group_id, len(members)
        row["still_improving"] = bool(members["still_improving"].any())
        rows.append(row)
    return pd.concat(rows, ignore_index=True)


def select_best(runs):
    """Best row per table and model by the validation metric the runs were early-stopped
    on. If a model's runs were selected by different metrics, the metric most of them used
    decides (rows without that validation metric drop out)."""
    import pandas as pd

    if runs.empty:
        return runs.assign(valid=pd.Series(dtype=float))
    keep = []
    for _, group in runs.groupby([*TABLE_KEY, "model", "variant"], sort=True, dropna=False):
        counts = group["selected_by"].value_counts()
        metric = sorted(counts.index[counts == counts.max()])[0] if len(counts) else None
        score = group.get(f"best_valid/{metric}") if metric else None
        if score is None or score.isna().all():
            continue
        ranked = group.assign(valid=score, selected_by=metric).dropna(subset=["valid"])
        ranked = ranked.sort_values(["valid", "start_time", "run_id"], ascending=[False, False, True])
        keep.append(ranked.iloc[0])
    return pd.DataFrame(keep).reset_index(drop=True) if keep else runs.iloc[0:0].assign(valid=[])


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def row_label(row) -> str:
    """How a row is named in its table: the model, and its variant (e.g. a text item tower)."""
    variant = row.get("variant") or ""
    return f"{row['model']} [{variant}]" if variant else str(row["model"])


def significance_marks(rows: dict, metrics, alpha: float = 0.05) -> dict:
    """{metric: label of the best row} for every metric where the best of ``rows`` ({label:
    row}) beats the runner-up by a paired t-test on the same test examples, Holm-corrected
    over its comparisons with every other row. Rows without saved examples take no part."""
    import numpy as np

    from recboard.benchmarks.evaluation.significance import ComparisonError, holm, paired_test, run_examples

    examples = {}
    for label, row in rows.items():
        try:
            examples[label] = row_examples(row, run_examples)
        except (ComparisonError, ValueError):
            continue
    marks = {}
    for m in metrics:
        ranked = sorted((label for label in examples if m in examples[label] and _finite(rows[label].get(m))),
                        key=lambda label: -float(rows[label].get(m)))
        if len(ranked) < 2 or any(not np.array_equal(examples[r]["row"], examples[ranked[0]]["row"]) for r in ranked):
            continue
        best, others = ranked[0], ranked[1:]
        try:
            pvalues = holm([paired_test(examples[best][m], examples[o][m])["p_ttest"] for o in others])
        except ComparisonError:   # too few examples both rows scored (e.g. AUC undefined on most)
            continue
        if pvalues[0] < alpha and rows[best].get(m) > rows[others[0]].get(m):
            marks[m] = best
    return marks


def row_examples(row, run_examples) -> dict:
    """A row's per-example test metrics: from its record (a seed group: each example's mean
    over the seeds) or from its MLflow store (``run_examples``)."""
    store = str(row.get("store") or "")
    if not store.startswith(RECORD_STORE):
        return run_examples(str(row["run_id"]), row.get("store") or None)[1]
    runs = [r for r in R.read_record(Path(store[len(RECORD_STORE):]))["runs"] if r.get("examples") is not None]
    members = [r for r in runs if r["run_id"] == row["run_id"] or r["tags"].get("recboard.group") == row["run_id"]]
    if not members:
        raise ValueError(f"{store} keeps no test examples of run {row['run_id']}")
    from recboard.benchmarks.evaluation.significance import mean_over_runs
    return mean_over_runs([R.decode_examples(r["examples"]) for r in members])
