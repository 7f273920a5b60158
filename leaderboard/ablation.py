"""The BERT4Rec paper's ablation table (Sun et al., CIKM'19, §4.8): NDCG@10 of the model with
one part taken out, one column per dataset, a row per architecture.

Rows come from BERT4Rec runs (ID items; text-tower runs are another model), whatever made
them: ``bench run`` with an ablation key (``--set position_embedding=false``: the run's
variant "w/o PE"), ``--set dropout=0`` (w/o Dropout), other layer and head counts, or a
``bench sweep`` over them. A run's row is named by what differs from its column's reference
architecture: the layers and heads its ablation runs were made with (the paper's L=2, h=2
where none were), with dropout on and every part present; among the runs of one row,
dataset and protocol, the configuration with the best mean validation score stands, as in
the main tables. Protocols never share a table. A cell is the test NDCG@10 (mean ±
std over seeds), ↓ where it is more than 10% below the reference row of its column, as the
paper marks large drops. The table appears only when some ablation run exists beside a
reference run.
"""
from __future__ import annotations

from recboard.leaderboard.runs import select_best
from recboard.leaderboard.tables import (DATASET_ORDER, DATASET_TITLES, NO_RESULT, PROTOCOL_TITLES,
                                         STILL_IMPROVING, number)

MODEL = "bert4rec"
PAPER_REFERENCE = (2, 2)   # the paper's L and h
REFERENCE_LABEL = "BERT4Rec (reference)"
METRICS = ("NDCG@10", "nDCG@10")   # the paper's measure; nDCG@10 on impression data
DROP = 0.9             # ↓: below 90% of the reference (the paper's "more than 10%")


def is_ablation(variant) -> bool:
    """A variant made only of ablations ("w/o PE", "w/o PE, w/o RC"): kept out of the main tables."""
    parts = [p for p in str(variant or "").split(", ") if p]
    return bool(parts) and all(p.startswith("w/o ") for p in parts)


def architecture(row) -> tuple | None:
    """(layers, heads) of a run, None when it did not record them."""
    layers, heads = number(row.get("num_layers")), number(row.get("num_heads"))
    return None if layers is None or heads is None else (int(layers), int(heads))


def architecture_label(row, reference: tuple = PAPER_REFERENCE) -> str | None:
    """The row a BERT4Rec run belongs to, named by what differs from ``reference`` (L, h);
    None for a run that is not of this table (text items)."""
    variant = str(row.get("variant") or "")
    if variant and not is_ablation(variant):
        return None
    parts = [p for p in variant.split(", ") if p]
    dropout, attention_dropout = number(row.get("dropout")), number(row.get("attention_dropout"))
    if dropout == 0 and attention_dropout in (None, 0):
        parts.append("w/o Dropout")
    shape = architecture(row)
    if shape is None:
        return None
    if shape != reference:
        parts.append(f"L={shape[0]}, h={shape[1]}")
    return ", ".join(parts) if parts else REFERENCE_LABEL


def references_of(runs) -> dict:
    """{(protocol, dataset, identity): (L, h)}: the architecture most of a column's ablation
    runs share (ties: the smaller), else the paper's."""
    out = {}
    for key, rows in runs.groupby(["protocol", "dataset", "identity"], sort=True):
        shapes = [architecture(r) for _, r in rows.iterrows() if is_ablation(r.get("variant"))]
        shapes = [s for s in shapes if s is not None]
        out[key] = max(sorted(set(shapes)), key=shapes.count) if shapes else PAPER_REFERENCE
    return out


def ablation_tables(runs) -> list:
    """[(protocol, {row label: {(dataset, identity): selected row}}, {(dataset, identity):
    reference (L, h)})] for every protocol with a reference row and at least one other row.
    ``runs``: ``collect(best_only=False, sweeps=True)``."""
    runs = runs[runs["model"] == MODEL]
    if runs.empty:
        return []
    references = references_of(runs)
    labels = runs.apply(lambda r: architecture_label(r, references[(r["protocol"], r["dataset"], r["identity"])]),
                        axis=1)
    runs = runs.assign(variant=labels)[labels.notna()]
    best = select_best(runs)
    dataset_order = {name: i for i, name in enumerate(DATASET_ORDER)}
    tables = []
    for protocol, rows in best.groupby("protocol", sort=True):
        if REFERENCE_LABEL not in set(rows["variant"]) or rows["variant"].nunique() < 2:
            continue
        columns = sorted({(d, i) for d, i in zip(rows["dataset"], rows["identity"])},
                         key=lambda c: (dataset_order.get(c[0], len(dataset_order)), c))
        cells = {}
        for _, row in rows.iterrows():
            cells.setdefault(row["variant"], {})[(row["dataset"], row["identity"])] = row
        tables.append((protocol, cells, {c: references[(protocol, *c)] for c in columns}))
    return tables


def _cell(row, reference) -> str:
    if row is None:
        return NO_RESULT
    metric = next((m for m in METRICS if number(row.get(m)) is not None), None)
    if metric is None:
        return NO_RESULT
    value, std = number(row.get(metric)), number(row.get(f"{metric} std"))
    text = f"{value:.4f}"
    if int(row.get("n_seeds") or 1) > 1 and std is not None:
        text += f" ± {std:.4f}"
    ref = number(reference.get(metric)) if reference is not None else None
    if ref is not None and value < DROP * ref:
        text += " ↓"
    return text + (f" {STILL_IMPROVING}" if str(row.get("still_improving")) == "True" else "")


def row_order(labels) -> list:
    """The reference first, then the parts taken out, then other sizes (the paper's order)."""
    return sorted(labels, key=lambda label: (label != REFERENCE_LABEL, label.startswith("L="), label))


def markdown_section(runs) -> list:
    """Markdown lines of the ablation tables (none without ablation runs)."""
    from tabulate import tabulate

    lines = []
    for protocol, cells, references in ablation_tables(runs):
        columns = list(references)
        titles = [DATASET_TITLES.get(d, d) + ("" if sum(c[0] == d for c in columns) == 1 else f" `{i}`")
                  for d, i in columns]
        reference = cells[REFERENCE_LABEL]
        body = [[label] + [_cell(cells[label].get(c), reference.get(c)) for c in columns]
                for label in row_order(cells)]
        seeds = sorted({int(r.get("n_seeds") or 1) for row in cells.values() for r in row.values()})
        lines += [f"### BERT4Rec ablations — {PROTOCOL_TITLES.get(protocol, protocol)}", "",
                  "The paper's ablation analysis (§4.8), with our runs: test NDCG@10 of BERT4Rec with one part "
                  "taken out (PE: positional embedding, PFFN: position-wise feed-forward network, LN: layer "
                  "normalisation, RC: residual connection) or another number of layers L and heads h; each cell "
                  "is the configuration selected on validation for that row; ↓: more than 10% below the "
                  f"reference row. Seeds per cell: {', '.join(map(str, seeds))}. The reference: dropout on, every "
                  "part present, and " + "; ".join(f"L={references[c][0]}, h={references[c][1]} on {t}"
                                                   for c, t in zip(columns, titles)) + ".", "",
                  tabulate(body, headers=["Architecture", *titles], tablefmt="github", disable_numparse=True,
                           colalign=("left",) + ("right",) * len(columns)), ""]
    return lines

