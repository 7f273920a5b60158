"""The leaderboard's rows: MLflow runs read back, seed groups folded, the best configuration
per table chosen on validation.

``collect()`` reads FINISHED runs of kind ``run``, ``trial`` and ``eval`` (re-scored saved
models) that have test metrics, from one or several MLflow stores. Runs of one seed group
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

from recboard.benchmarks.tracking import store as tracking
from recboard.benchmarks.evaluation.protocols import IMPRESSION_METRICS, SEQUENCE_METRICS

ALL_METRICS = SEQUENCE_METRICS + tuple(m for m in IMPRESSION_METRICS if m not in SEQUENCE_METRICS)
RUN_COLUMNS = ["run_id", "store", "dataset", "identity", "data_users", "data_items", "data_interactions",
               "protocol", "task", "model", "variant", "group", "sweep", "kind", "device", "git_commit", "selected_by",
               "valid", "train_time_s", "wall_time_s", "n_params", "best_epoch", "start_time", "n_seeds"]
TABLE_KEY = ["dataset", "identity", "protocol"]
UNKNOWN_DATA = "unknown"   # runs recorded before data identities were


def collect(tracking_uri=None, best_only: bool = True):
    """Finished runs with test metrics -> one row per run or seed group (``best_only``: the
    best per table and model). ``tracking_uri`` may be a list: stores brought back from
    several machines are read as one."""
    import pandas as pd

    frames, finished_groups = [], set()
    for uri in stores(tracking_uri):
        for kind in ("run", "trial", "eval"):
            found = tracking.search_runs(tracking.tag_filter({"recboard.kind": kind}, status="FINISHED"), uri,
                                         output_format="pandas")
            if len(found):
                frames.append(found.assign(store=uri))
        groups = tracking.search_runs(tracking.tag_filter({"recboard.kind": "group"}, status="FINISHED"), uri,
                                      output_format="list")
        finished_groups.update(g.info.run_id for g in groups)
    runs = _tidy(pd.concat(frames, ignore_index=True) if frames else None)
    # the seeds of an interrupted group are not a group: a partial mean would be a lucky subset;
    # a sweep's points are ablations, each its own configuration, drawn in figures instead
    runs = runs[(runs["group"].isna() | runs["group"].isin(finished_groups)) & runs["sweep"].isna()]
    runs = runs.reset_index(drop=True)
    runs = fold_groups(runs)
    return select_best(runs) if best_only else runs


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
        "kind": tag("kind"),
        "device": tag("device"), "git_commit": tag("git_commit"), "selected_by": tag("metric"),
        "train_time_s": metric("train_time_s"), "wall_time_s": metric("wall_time_s"),
        "n_params": n_params, "best_epoch": metric("best_epoch"), "start_time": raw["start_time"], "n_seeds": 1,
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
            examples[label] = run_examples(str(row["run_id"]), row.get("store"))[1]
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
