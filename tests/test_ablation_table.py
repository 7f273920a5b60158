"""The BERT4Rec ablation table (the paper's §4.8) rendered from MLflow runs: which runs are
its rows, the reference row, the ↓ marks, and that ablated models stay out of the main tables."""
from __future__ import annotations

import pytest

pd = pytest.importorskip("pandas")

from recboard.leaderboard import render as lb  # noqa: E402
from recboard.leaderboard.ablation import architecture_label, is_ablation  # noqa: E402

from test_leaderboard import _log  # noqa: E402


@pytest.mark.parametrize("variant, params, label", [
    ("", {"num_layers": "2", "num_heads": "2", "dropout": "0.1"}, "BERT4Rec (reference)"),
    ("w/o PE", {"num_layers": "2", "num_heads": "2", "dropout": "0.1"}, "w/o PE"),
    ("", {"num_layers": "2", "num_heads": "2", "dropout": "0.0", "attention_dropout": "None"}, "w/o Dropout"),
    ("", {"num_layers": "2", "num_heads": "2", "dropout": "0.0", "attention_dropout": "0.2"}, "BERT4Rec (reference)"),
    ("", {"num_layers": "1", "num_heads": "4", "dropout": "0.1"}, "L=1, h=4"),
    ("w/o LN, w/o RC", {"num_layers": "3", "num_heads": "2", "dropout": "0.1"}, "w/o LN, w/o RC, L=3, h=2"),
    ("glove titles", {"num_layers": "2", "num_heads": "2", "dropout": "0.1"}, None),       # another model
    ("glove titles, w/o PE", {"num_layers": "2", "num_heads": "2", "dropout": "0.1"}, None),
])
def test_a_run_is_named_by_what_differs_from_the_reference(variant, params, label):
    assert architecture_label({"variant": variant, **params}) == label


def test_only_ablation_variants_are_ablations():
    assert is_ablation("w/o PE") and is_ablation("w/o PE, w/o RC")
    assert not is_ablation("") and not is_ablation(None) and not is_ablation("glove titles, w/o PE")


def _bert4rec(client, exp, valid, test, variant="", layers=2, heads=2, dropout=0.1, group=None):
    from mlflow.entities import Param

    tags = {"recboard.variant": variant} if variant else {}
    if group:
        tags["recboard.group"] = group
    run_id = _log(client, exp, model="bert4rec", dataset="ml-1m", protocol="sampled-pop100", valid=valid,
                  test=test, extra_tags=tags)
    client.log_batch(run_id, params=[Param("num_layers", str(layers)), Param("num_heads", str(heads)),
                                     Param("dropout", str(dropout)), Param("attention_dropout", "None")])
    return run_id


def test_the_ablation_table_from_mlflow_runs(tmp_path, fresh_store):
    import mlflow

    uri = fresh_store(tmp_path)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("lb", artifact_location=(tmp_path / "artifacts").as_uri())
    # NDCG@10 is logged as test + 0.04 (see _log): the reference's is 0.44
    group = _log(client, exp, model="bert4rec", dataset="ml-1m", protocol="sampled-pop100", valid=0, test=0,
                 kind="group", with_test=False)
    for test in (0.38, 0.42):   # two seeds: mean 0.44 ± 0.0283
        _bert4rec(client, exp, valid=0.40, test=test, group=group)
    _bert4rec(client, exp, valid=0.30, test=0.50)                    # the same row, worse on validation
    _bert4rec(client, exp, valid=0.20, test=0.20, variant="w/o PE")   # 0.24: more than 10% down
    _bert4rec(client, exp, valid=0.39, test=0.38, dropout=0.0)        # 0.42: within 10%
    _bert4rec(client, exp, valid=0.41, test=0.40, layers=1)           # best validation of the plain runs
    _bert4rec(client, exp, valid=0.90, test=0.90, variant="glove titles")
    text = lb.build("markdown", tracking_uri=uri, references=False, commit="c0ffee", date="2026-01-02",
                    records=None)
    section = text[text.index("### BERT4Rec ablations — sampled ranking"):]
    section = section[:section.index("\n\n###")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "Architecture" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["BERT4Rec (reference)", "w/o Dropout", "w/o PE", "L=1, h=2"]
    cells = {r.split("|")[1].strip(): r.split("|")[2].strip() for r in rows}
    assert cells["BERT4Rec (reference)"] == "0.4400 ± 0.0283"
    assert cells["w/o PE"] == "0.2400 ↓" and cells["w/o Dropout"] == "0.4200"
    assert next(line for line in section.splitlines() if "Architecture" in line).split("|")[2].strip() == "ML-1m"
    # the main table: no ablated model; the plain BERT4Rec row is the best on validation (L=1)
    main = text[text.index("### ML-1m — sampled"):text.index("### BERT4Rec ablations")]
    assert "w/o PE" not in main and "bert4rec [glove titles]" in main
    line = next(x for x in main.splitlines() if x.startswith("| bert4rec "))
    assert "0.4400" in line and "±" not in line


def test_no_table_without_an_ablation_beside_the_reference(tmp_path, fresh_store):
    import mlflow

    uri = fresh_store(tmp_path)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("lb", artifact_location=(tmp_path / "artifacts").as_uri())
    _bert4rec(client, exp, valid=0.4, test=0.4)
    _bert4rec(client, exp, valid=0.3, test=0.3, variant="glove titles")
    text = lb.build("markdown", tracking_uri=uri, references=False, records=None)
    assert "BERT4Rec ablations" not in text


def test_the_reference_is_the_architecture_the_ablations_were_made_with(tmp_path, fresh_store):
    """A one-layer preset's ablations are measured against the one-layer model, not L=2."""
    import mlflow

    uri = fresh_store(tmp_path)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("lb", artifact_location=(tmp_path / "artifacts").as_uri())
    _bert4rec(client, exp, valid=0.40, test=0.40, layers=1)
    _bert4rec(client, exp, valid=0.30, test=0.30, layers=1, variant="w/o RC")   # 0.34 vs 0.44: ↓
    _bert4rec(client, exp, valid=0.42, test=0.42, layers=1, dropout=0.0)
    _bert4rec(client, exp, valid=0.41, test=0.41, layers=2)
    text = lb.build("markdown", tracking_uri=uri, references=False, records=None)
    section = text[text.index("### BERT4Rec ablations"):]
    section = section[:section.index("\n\n###")]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in section.splitlines()
            if line.startswith("| ") and "Architecture" not in line}
    assert rows == {"BERT4Rec (reference)": "0.4400", "w/o Dropout": "0.4600", "w/o RC": "0.3400 ↓",
                    "L=2, h=2": "0.4500"}
    assert "L=1, h=2 on ML-1m" in section
