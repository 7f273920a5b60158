"""`bench leaderboard`: MLflow runs -> paper-style tables (golden file), selection by
validation not test, protocols kept apart, csv / json, atomic write, references.toml."""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
pd = pytest.importorskip("pandas")

from recboard.datasets.files import atomic_write_text  # noqa: E402
from recboard.leaderboard import render as lb  # noqa: E402
from recboard.leaderboard.references import load_references  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
COMMIT, DATE = "0123abc", "2026-01-02"

REFERENCES = """
[data.ml-1m]
users = 6
items = 20
interactions = 90

[citations.paper2019]
text = "A. Author. A Paper. Venue 2019."
url = "https://example.org/paper"

[citations.unused2020]
text = "B. Author. Not shown. Venue 2020."

[[results]]
dataset = "ml-1m"
protocol = "full"
model = "SASRec (published)"
citation = "paper2019"
source = "Table 1"
metrics = { "HR@10" = "0.2500", "NDCG@10" = "0.1341" }

[[results]]
dataset = "ml-1m"
protocol = "sampled-pop100"
model = "BERT4Rec (published)"
citation = "paper2019"
source = "Table 2"
metrics = { "HR@10" = "0.6970" }
"""

SEQ = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
IMP = ("AUC", "MRR", "nDCG@5", "nDCG@10")


DATA = {"ml-1m": ("d1", 6, 20, 90), "mind_small": ("m1", 3, 40, 12)}   # identity, users, items, interactions


def _log(client, experiment_id, *, model, dataset, protocol, valid, test, kind="run", status="FINISHED",
         metric=None, device="cpu", train_time=90.0, n_params=12345, with_test=True, data=None, extra_tags=None):
    from mlflow.entities import Metric, Param

    task = "impression" if protocol == "impressions" else "sequence"
    metric = metric or ("AUC" if task == "impression" else "NDCG@10")
    names = IMP if task == "impression" else SEQ
    tags = {"recboard.model": model, "recboard.dataset": dataset, "recboard.task": task,
            "recboard.protocol": protocol, "recboard.metric": metric, "recboard.device": device,
            "recboard.git_commit": "feedbeef", "recboard.kind": kind, "recboard.fingerprint": "fp"}
    identity, users, items, interactions = data or DATA[dataset]
    tags.update({"recboard.identity": identity, "recboard.data_users": str(users),
                 "recboard.data_items": str(items), "recboard.data_interactions": str(interactions),
                 **(extra_tags or {})})
    run = client.create_run(experiment_id, tags=tags)
    key = metric.replace("@", "_at_")
    metrics = [Metric(f"valid/{key}", valid * (epoch + 1) / 3, 0, epoch) for epoch in range(3)]
    metrics.append(Metric(f"best_valid/{key}", valid, 0, 0))
    if with_test:
        metrics += [Metric(f"test/{name.replace('@', '_at_')}", round(test + 0.01 * i, 4), 0, 0)
                    for i, name in enumerate(names)]
    metrics += [Metric(k, v, 0, 0) for k, v in {"wall_time_s": train_time + 5, "train_time_s": train_time,
                                                "n_params": n_params, "best_epoch": 2}.items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param("lr", "0.001"), Param("epochs", "3")])
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory, fresh_store):
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = fresh_store(root)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("lb", artifact_location=(root / "artifacts").as_uri())
    log = lambda **kw: _log(client, exp, **kw)  # noqa: E731
    ids = {
        # sasrec/ml-1m/full: B has the better TEST score, A the better VALIDATION score
        "sasrec_a": log(model="sasrec", dataset="ml-1m", protocol="full", valid=0.30, test=0.10,
                        device="NVIDIA H100 80GB HBM3", train_time=4000, n_params=1_234_567),
        "sasrec_b": log(model="sasrec", dataset="ml-1m", protocol="full", valid=0.25, test=0.50),
        "bert4rec_run": log(model="bert4rec", dataset="ml-1m", protocol="full", valid=0.20, test=0.20),
        # a tuning trial beats the plain bert4rec run on validation: trials count
        "bert4rec_trial": log(model="bert4rec", dataset="ml-1m", protocol="full", valid=0.22, test=0.15,
                              kind="trial", train_time=30),
        "pop": log(model="pop", dataset="ml-1m", protocol="full", valid=0.05, test=0.05, train_time=1.5,
                   n_params=0),
        # never shown: failed / killed runs, the tune parent, a run without test metrics
        "failed": log(model="sasrec", dataset="ml-1m", protocol="full", valid=0.99, test=0.99, status="FAILED"),
        "killed": log(model="sasrec", dataset="ml-1m", protocol="full", valid=0.98, test=0.98, kind="trial",
                      status="KILLED"),
        "tune": log(model="sasrec", dataset="ml-1m", protocol="full", valid=0.97, test=0.97, kind="tune"),
        "no_test": log(model="sasrec", dataset="ml-1m", protocol="full", valid=0.96, test=0.0, with_test=False),
        # same model, other protocol: its own table, never mixed with full ranking
        "sasrec_uni": log(model="sasrec", dataset="ml-1m", protocol="sampled-uni100", valid=0.70, test=0.60),
        "nrms": log(model="nrms_glove", dataset="mind_small", protocol="impressions", valid=0.66, test=0.60,
                    n_params=5_000_000),
        "random_mind": log(model="random", dataset="mind_small", protocol="impressions", valid=0.5, test=0.25),
    }
    return uri, ids


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    path = tmp_path_factory.mktemp("refs") / "references.toml"
    path.write_text(REFERENCES)
    return load_references(path)


def _stable(df, ids):
    """Run ids are random uuids: swap in readable names so the golden file is stable."""
    names = {v: k for k, v in ids.items()}
    return df.assign(run_id=df["run_id"].map(names))


def test_collect_picks_best_validation_not_test(store):
    uri, ids = store
    best = lb.collect(uri)
    picked = {(r.dataset, r.protocol, r.model): r.run_id for r in best.itertuples()}
    assert picked == {
        ("ml-1m", "full", "sasrec"): ids["sasrec_a"],          # not sasrec_b (better test)
        ("ml-1m", "full", "bert4rec"): ids["bert4rec_trial"],  # trial with better validation
        ("ml-1m", "full", "pop"): ids["pop"],
        ("ml-1m", "sampled-uni100", "sasrec"): ids["sasrec_uni"],
        ("mind_small", "impressions", "nrms_glove"): ids["nrms"],
        ("mind_small", "impressions", "random"): ids["random_mind"],
    }
    row = best[best["run_id"] == ids["sasrec_a"]].iloc[0]
    assert row["NDCG@10"] == pytest.approx(0.14) and row["valid"] == pytest.approx(0.30)
    assert row["selected_by"] == "NDCG@10"
    everything = lb.collect(uri, best_only=False)
    excluded = {ids[k] for k in ("failed", "killed", "tune", "no_test")}
    assert not excluded & set(everything["run_id"]) and len(everything) == 8


def test_markdown_matches_golden(store, references):
    uri, ids = store
    text = lb.render(_stable(lb.collect(uri), ids), references, commit=COMMIT, date=DATE)
    if os.environ.get("RECBOARD_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_markdown_layout(store, references):
    uri, ids = store
    text = lb.render(_stable(lb.collect(uri), ids), references, commit=COMMIT, date=DATE)
    sections = text.split("### ")
    full = next(s for s in sections if s.startswith("ML-1m — full ranking (all items, seen items masked)"))
    uni = next(s for s in sections if s.startswith("ML-1m — sampled ranking (target + 100 uniformly"))
    mind = next(s for s in sections if s.startswith("MIND-small — impression ranking"))
    # protocols apart: the sampled run is only in the sampled table, the published
    # sampled-pop100 row appears nowhere (we have no run under that protocol)
    assert "`sasrec_u`" in uni and "`sasrec_u`" not in full and "BERT4Rec (published)" not in text
    assert "| SASRec (published) | published [paper2019]" in full and "0.2500" in full and "n/r" in full
    header = next(line for line in full.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Model", "Source", *SEQ, "Seeds", "Train / wall", "Device", "Params", "Run @ commit"]
    mind_header = next(line for line in mind.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in mind_header.strip("|").split("|")][2:6] == list(IMP)
    # best of OUR rows in bold: sasrec_a has NDCG@10 0.1400 < bert4rec trial 0.1900
    assert "**0.1900**" in full and "**0.1400**" not in full
    sasrec_line = next(line for line in full.splitlines() if line.startswith("| sasrec"))
    assert "1.11 h" in sasrec_line and "NVIDIA H100 80GB HBM3" in sasrec_line and "1.23M" in sasrec_line
    # rows that exist: a model with runs elsewhere but none here has no row of dashes
    assert not any(line.startswith("| nrms_glove") for line in full.splitlines())
    assert "Krichene & Rendle" in text and "[paper2019] A. Author" in text and "unused2020" not in text
    assert f"`{COMMIT}`" in text and DATE in text


def test_csv_and_json(store, references):
    uri, ids = store
    df = _stable(lb.collect(uri), ids)
    table = pd.read_csv(io.StringIO(lb.render(df, references, fmt="csv", commit=COMMIT, date=DATE)))
    assert len(table) == 6 + 1  # our best runs + the ml-1m/full published row
    ours = table[table["source"] == "ours"].set_index(["dataset", "protocol", "model"])
    assert ours.loc[("ml-1m", "full", "sasrec"), "run_id"] == "sasrec_a"
    assert ours.loc[("ml-1m", "full", "sasrec"), "valid"] == pytest.approx(0.30)
    assert ours.loc[("mind_small", "impressions", "nrms_glove"), "AUC"] == pytest.approx(0.60)
    assert pd.isna(ours.loc[("mind_small", "impressions", "nrms_glove"), "HR@10"])
    published = table[table["source"] == "published"].iloc[0]
    assert published["citation"] == "paper2019" and published["NDCG@10"] == pytest.approx(0.1341)

    data = json.loads(lb.render(df, references, fmt="json", commit=COMMIT, date=DATE))
    assert data["commit"] == COMMIT and data["date"] == DATE
    keys = [(t["dataset"], t["protocol"]) for t in data["tables"]]
    assert keys == [("ml-1m", "full"), ("ml-1m", "sampled-uni100"), ("mind_small", "impressions")]
    mind = data["tables"][2]
    assert mind["metrics"] == list(IMP) and {r["model"] for r in mind["rows"]} == {"nrms_glove", "random"}
    only_mind = lb.render(df, references, commit=COMMIT, date=DATE, datasets=["mind_small"])
    assert "### MIND-small" in only_mind and "### ML-1m" not in only_mind
    with pytest.raises(ValueError, match="unknown leaderboard format"):
        lb.render(df, references, fmt="html")


def test_build_written_atomically_in_the_suffix_format(store, references, tmp_path):
    uri, _ = store
    out = tmp_path / "board" / "LEADERBOARD.md"
    out.parent.mkdir()
    out.write_text("old")
    os.chmod(out, 0o644)
    atomic_write_text(out, lb.build(lb.FORMATS[out.suffix], tracking_uri=uri, references=references,
                                    commit=COMMIT, date=DATE))
    assert out.read_text().startswith("# recboard leaderboard") and oct(out.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in out.parent.iterdir()] == ["LEADERBOARD.md"]  # no temp file left
    data = json.loads(lb.build(lb.FORMATS[".json"], tracking_uri=uri, references=references))
    assert len(data["tables"]) == 3


def test_empty_store(tmp_path, fresh_store):
    text = lb.render(lb.collect(fresh_store(tmp_path)), False, commit=COMMIT, date=DATE)
    assert "No finished runs" in text and "###" in text


def test_packaged_references_are_valid():
    refs = load_references()
    _check_packaged(refs)


def test_references_parse_without_tomllib(monkeypatch):
    """Python 3.10 has no tomllib; the tomli backport parses the same file."""
    pytest.importorskip("tomli")
    monkeypatch.setitem(sys.modules, "tomllib", None)      # any `import tomllib` now fails
    _check_packaged(load_references())


def _check_packaged(refs):
    by_key = {(r.dataset, r.protocol, r.model, r.citation): r for r in refs.results}
    assert by_key[("ml-1m", "sampled-pop100", "BERT4Rec", "sun2019bert4rec")].metrics["NDCG@10"] == 0.4818
    assert by_key[("beauty", "sampled-pop100", "SASRec", "sun2019bert4rec")].metrics["HR@10"] == 0.2653
    assert by_key[("ml-1m", "full", "SASRec+ (full cross-entropy)", "klenitskiy2023turning")].text["NDCG@10"] == "0.1821"
    assert by_key[("mind_small", "impressions", "NRMS + BERT-base", "yadayuki_newsrecllm")].metrics["AUC"] == 0.689
    assert len({r.citation for r in refs.results}) == 4 and "krichene2020sampled" in refs.citations
    # each BERT4Rec Table 2 model has all six sampled metrics on both datasets
    table2 = [r for r in refs.results if r.citation == "sun2019bert4rec"]
    assert len(table2) == 18 and all(len(r.metrics) == 6 for r in table2)


@pytest.mark.parametrize("entry, message", [
    ('dataset = "ml-10m"\nprotocol = "full"\nmodel = "X"\ncitation = "c"\nmetrics = { "HR@10" = 0.1 }',
     "line 5 .*unknown dataset 'ml-10m'"),
    ('dataset = "ml-1m"\nprotocol = "full"\nmodel = "X"\ncitation = "c"\nmetrics = { "AUC" = 0.6 }',
     "line 9 .*metric 'AUC' is not reported under protocol 'full'"),
    ('dataset = "ml-1m"\nprotocol = "full"\nmodel = "X"\ncitation = "c"\nmetrics = { "HR@10" = 28.4 }',
     "line 9 .*expected a fraction"),
    ('dataset = "ml-1m"\nprotocol = "full"\nmodel = "X"\ncitation = "nope"\nmetrics = { "HR@10" = 0.1 }',
     "line 8 .*citation 'nope' has no"),
    ('dataset = "ml-1m"\nmodel = "X"', "line 4 .*missing protocol, citation, metrics"),
])
def test_bad_references_name_file_and_line(tmp_path, entry, message):
    path = tmp_path / "refs.toml"
    path.write_text(f'[citations.c]\ntext = "C."\n\n[[results]]\n{entry}\n')
    with pytest.raises(ValueError, match=message) as err:
        load_references(path)
    assert str(path) in str(err.value)


def test_other_data_gets_its_own_table_without_the_published_rows(tmp_path, fresh_store, references):
    """A run on another ML-1m file (other identity and size) never shares a table with the
    runs on the reference data, and the published rows stay beside the data they match."""
    import mlflow

    uri = fresh_store(tmp_path)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("lb", artifact_location=(tmp_path / "artifacts").as_uri())
    _log(client, exp, model="sasrec", dataset="ml-1m", protocol="full", valid=0.2, test=0.2)
    _log(client, exp, model="sasrec", dataset="ml-1m", protocol="full", valid=0.9, test=0.9,
         data=("other", 7, 21, 95))
    best = lb.collect(uri)
    assert sorted(best["identity"]) == ["d1", "other"]      # the better validation did not win across data
    text = lb.render(best, references, commit=COMMIT, date=DATE)
    sections = {s.split("\n")[0]: s for s in text.split("### ")[1:]}
    ours = sections["ML-1m — full ranking (all items, seen items masked) — data `d1`"]
    other = sections["ML-1m — full ranking (all items, seen items masked) — data `other`"]
    assert "SASRec (published)" in ours and "0.2000" in ours and "0.9000" not in ours
    assert "SASRec (published)" not in other and "0.9000" in other
    assert "7 users, 21 items, 95 interactions (identity `other`)" in other
    assert "1 published row(s) for this dataset were measured on other data" in other


def test_seed_group_is_one_row_with_mean_and_std(tmp_path, fresh_store, references):
    import mlflow

    uri = fresh_store(tmp_path)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("lb", artifact_location=(tmp_path / "artifacts").as_uri())
    # the group's mean validation (0.25) loses to the single run (0.28), although one seed (0.30) beats it
    g1, g2, g3 = (_log(client, exp, model=m, dataset="ml-1m", protocol="full", valid=0, test=0, kind="group",
                       with_test=False) for m in ("sasrec", "bert4rec", "pop"))
    for valid, test in ((0.30, 0.10), (0.20, 0.20)):
        _log(client, exp, model="sasrec", dataset="ml-1m", protocol="full", valid=valid, test=test,
             extra_tags={"recboard.group": g1})
    # the one finished seed of an interrupted group is not shown as if it were the group
    client.set_terminated(g3, status="KILLED")
    _log(client, exp, model="pop", dataset="ml-1m", protocol="full", valid=0.9, test=0.9,
         extra_tags={"recboard.group": g3})
    _log(client, exp, model="sasrec", dataset="ml-1m", protocol="full", valid=0.28, test=0.05)
    _log(client, exp, model="bert4rec", dataset="ml-1m", protocol="full", valid=0.1, test=0.3,
         extra_tags={"recboard.group": g2})
    _log(client, exp, model="bert4rec", dataset="ml-1m", protocol="full", valid=0.1, test=0.4,
         extra_tags={"recboard.group": g2})
    best = lb.collect(uri).set_index("model")
    assert "pop" not in best.index
    assert best.loc["sasrec", "n_seeds"] == 1 and best.loc["sasrec", "valid"] == pytest.approx(0.28)
    assert best.loc["bert4rec", "run_id"] == g2 and best.loc["bert4rec", "n_seeds"] == 2
    assert best.loc["bert4rec", "HR@1"] == pytest.approx(0.35)
    assert best.loc["bert4rec", "HR@1 std"] == pytest.approx(pd.Series([0.3, 0.4]).std(ddof=1))
    line = next(x for x in lb.render(lb.collect(uri), references, commit=COMMIT, date=DATE).splitlines()
                if x.startswith("| bert4rec"))
    assert "**0.3500** ± 0.0707" in line and "|       2 |" in line



GAPS = REFERENCES + """
[[gaps]]
dataset = "ml-1m"
protocol = "full"
model = "sasrec"
text = '''Ours trains 100 epochs,
        theirs 200.'''

[[gaps]]
dataset = "ml-1m"
protocol = "full"
model = "gru4rec"
text = "About a row we do not show."

[[gaps]]
dataset = "ml-1m"
protocol = "sampled-uni100"
model = "sasrec"
text = "No published row in this table to fall short of."
"""


def test_gap_sentences_sit_under_the_table_they_explain(store, tmp_path):
    """A row of ours below a published one gets its sentence under that table only: not under
    another protocol's table, and not when the row or the published rows are not shown."""
    uri, ids = store
    path = tmp_path / "references.toml"
    path.write_text(GAPS)
    refs = load_references(path)
    assert [g.text for g in refs.gaps][0] == "Ours trains 100 epochs, theirs 200."
    text = lb.render(_stable(lb.collect(uri), ids), refs, commit=COMMIT, date=DATE)
    sections = {s.split("\n")[0]: s for s in text.split("### ")[1:]}
    full = sections["ML-1m — full ranking (all items, seen items masked)"]
    assert full.count("*sasrec*: Ours trains 100 epochs, theirs 200.") == 1
    assert full.index("| SASRec (published)") < full.index("*sasrec*: Ours")   # under the table
    assert text.count("*sasrec*:") == 1 and "gru4rec" not in text and "No published row" not in text


def test_a_bad_gap_names_file_and_line(tmp_path):
    path = tmp_path / "refs.toml"
    path.write_text('[citations.c]\ntext = "C."\n\n[[gaps]]\ndataset = "ml-1m"\nprotocol = "full"\nmodel = "pop"\n')
    with pytest.raises(ValueError, match=r"refs.toml, line 4 \(\[\[gaps\]\] #1\): expected text"):
        load_references(path)
    path.write_text('[[gaps]]\ndataset = "ml-1m"\nprotocol = "fulll"\nmodel = "pop"\ntext = "t"\n')
    with pytest.raises(ValueError, match=r"line 3 \(\[\[gaps\]\] #1\): protocol must be one of"):
        load_references(path)
