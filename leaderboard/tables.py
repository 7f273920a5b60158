"""The tables of a leaderboard, whatever the format: one ``Table`` per (dataset, data identity,
protocol) with our selected rows, the published rows measured on the same data, significance
marks and the gap sentences; and the cell texts every format shares. ``render`` (markdown,
csv, json), ``latex`` and ``figures`` lay them out.

Rows that exist: a model has a row in a table when a run of ours exists for that data and
protocol (or the caller asks for it by name); published rows come from references.toml.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from recboard.benchmarks.evaluation.protocols import PROTOCOLS
from recboard.leaderboard.references import References, table_metrics
from recboard.leaderboard.runs import UNKNOWN_DATA, row_label, significance_marks

# the papers' row order (BERT4Rec's Table 2, then the news models); other models follow by name
MODEL_ORDER = ("random", "pop", "bpr_mf", "ncf", "fpmc", "gru4rec", "gru4rec_plus", "caser", "sasrec", "bert4rec",
               "nrms_glove", "nrms_bert", "nrms_distilbert", "nrms_minilm")
DATASET_ORDER = ("beauty", "steam", "ml-1m", "ml-20m", "mind_small", "mind_large", "mind_demo", "synthetic_seq",
                 "synthetic_mind", "synthetic_mind_cold")

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
    "mind_titles_cold": "Real MIND titles, cold start (simulated users, test news unseen in training)",
}
NO_RESULT = "—"       # our model has no finished run for this dataset / protocol
NOT_REPORTED = "n/r"  # the published source does not report this metric
STILL_IMPROVING = "↗"  # the run ended while its validation metric was still rising: under-trained


@dataclass
class Table:
    dataset: str
    identity: str
    protocol: str
    data: dict          # users / items / interactions / identity of the runs' prepared data
    ours: dict          # row label -> the selected row, or None ("—": asked for by name, no run)
    published: list     # References measured on this data and protocol
    withheld: int       # published rows of this dataset and protocol left out: other data
    marks: dict         # metric -> label of the row that is significantly best (†)
    title: str
    gaps: list = field(default_factory=list)   # references.Gap sentences about rows shown


def model_order(names) -> list:
    """Models in ``MODEL_ORDER`` (each variant after its model), then the rest by name."""
    index = {name: i for i, name in enumerate(MODEL_ORDER)}
    return sorted(set(names), key=lambda n: (index.get(n.split(" [")[0], len(index)), n))


def data_of(rows, identity: str) -> dict:
    first = rows.iloc[0]
    data = {"identity": identity}
    for key in ("users", "items", "interactions"):
        value = number(first.get(f"data_{key}"))
        if value is not None:
            data[key] = int(value)
    return data


def table_keys(df) -> list:
    dataset_order = {name: i for i, name in enumerate(DATASET_ORDER)}
    keys = {(d, i, p) for d, i, p in zip(df["dataset"], df["identity"], df["protocol"])}
    return sorted(keys, key=lambda k: (dataset_order.get(k[0], len(dataset_order)), k[0], k[1] == UNKNOWN_DATA,
                                       k[1], PROTOCOLS.index(k[2]) if k[2] in PROTOCOLS else len(PROTOCOLS)))


def build_tables(df, references: References, models, significance: bool) -> list:
    """One ``Table`` per (dataset, data identity, protocol), in a stable order."""
    df = df.assign(label=[row_label(r) for _, r in df.iterrows()]) if len(df) else df.assign(label=[])
    names = list(models or ())   # asked for by name: a row even without a run
    identities = df.groupby("dataset")["identity"].nunique().to_dict() if len(df) else {}
    tables = []
    for dataset, identity, protocol in table_keys(df):
        rows = df[(df["dataset"] == dataset) & (df["identity"] == identity) & (df["protocol"] == protocol)]
        ours = {name: rows[rows["label"] == name].iloc[0] if (rows["label"] == name).any() else None
                for name in model_order(names + list(rows["label"]))}
        data = data_of(rows, identity)
        candidates = [r for r in references.results if r.dataset == dataset and r.protocol == protocol]
        published = candidates if references.measured_on(dataset, data) else []
        shown = {k: v for k, v in ours.items() if v is not None}
        marks = significance_marks(shown, table_metrics(protocol)) if significance and len(shown) > 1 else {}
        title = table_title(dataset, protocol) + (f" — data `{identity[:8]}`" if identities.get(dataset, 1) > 1 else "")
        gaps = [g for g in references.gaps if (g.dataset, g.protocol) == (dataset, protocol) and g.model in shown]
        tables.append(Table(dataset, identity, protocol, data, ours, published,
                            len(candidates) - len(published), marks, title, gaps if published else []))
    return tables


def number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def duration(seconds) -> str:
    seconds = number(seconds)
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def count_text(n) -> str:
    n = number(n)
    if n is None:
        return ""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    return f"{n:.0f}"


def table_title(dataset: str, protocol: str) -> str:
    return f"{DATASET_TITLES.get(dataset, dataset)} — {PROTOCOL_TITLES.get(protocol, protocol)}"


def data_line(table: Table) -> str:
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
        printed = [f"{v:.4f}" for v in (number(r.get(m)) for r in rows) if v is not None]
        if len(printed) >= 2:
            best[m] = max(printed, key=float)
    return best


def run_cell(row) -> str:
    """Short MLflow run id (a seed group's parent run) and the commit the run was made from."""
    commit = str(row.get("git_commit") or "unknown")
    short = commit if commit == "unknown" else commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
    return f"`{str(row['run_id'])[:8]}` @ `{short}`"
