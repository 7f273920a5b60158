"""The leaderboard's paper outputs: LaTeX tables (``--out table.tex``), the "Datasets" section
of markdown and LaTeX, and the csv's one column per metric. Built from a small DataFrame
shaped like ``collect()``'s (no MLflow), plus one ``bench leaderboard`` run on a store.
pdflatex is not assumed: the checks are structural (balanced environments, braces and math,
nothing left unescaped)."""
from __future__ import annotations

import io
import re

import pytest

pd = pytest.importorskip("pandas")

from recboard.benchmarks import cli  # noqa: E402
from recboard.leaderboard import render as lb  # noqa: E402
from recboard.leaderboard import tables  # noqa: E402
from recboard.leaderboard.latex import escape, inline  # noqa: E402
from recboard.leaderboard.references import Reference, References  # noqa: E402

SEQ = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
IMP = ("AUC", "MRR", "nDCG@5", "nDCG@10")
COMMIT, DATE = "0123abc", "2026-01-02"


def _row(model, dataset, protocol, base, *, identity="d1", shape=(6, 20, 90), seeds=1, std=None):
    metrics = IMP if protocol == "impressions" else SEQ
    users, items, interactions = shape
    row = {"model": model, "variant": "", "dataset": dataset, "identity": identity, "protocol": protocol,
           "task": "impression" if protocol == "impressions" else "sequence",
           "data_users": str(users), "data_items": str(items), "data_interactions": str(interactions),
           "selected_by": metrics[-1] if protocol != "impressions" else "AUC", "valid": base, "n_seeds": seeds,
           "run_id": f"run-{model}", "git_commit": "feedbeef", "device": "cpu", "train_time_s": 60.0,
           "wall_time_s": 65.0, "n_params": 1000}
    for i, m in enumerate(metrics):
        row[m] = round(base + 0.01 * i, 4)
        if std is not None:
            row[f"{m} std"] = std
    return row


@pytest.fixture
def frame():
    return pd.DataFrame([
        _row("sasrec", "ml-1m", "full", 0.1622, seeds=3, std=0.0021),   # NDCG@10 0.2022: the best
        _row("nrms_glove", "ml-1m", "full", 0.10),
        _row("nrms_glove", "mind_small", "impressions", 0.60, identity="m1", shape=(3, 40, 12)),
        _row("random", "mind_small", "impressions", 0.50, identity="m1", shape=(3, 40, 12)),
    ])


@pytest.fixture
def references():
    cite = {"text": "A. Author & B. Author. 100% Recall. Venue 2019.", "url": "https://example.org/p"}
    return References(
        results=[Reference("ml-1m", "full", "SASRec_v2 {published}", "paper_2019", "Table 1",
                           {"NDCG@10": 0.1341}, {"NDCG@10": "0.1341"}, note="50% of users & item #1 ~ $x^2$")],
        citations={"paper_2019": cite}, data={"ml-1m": {"users": 6, "items": 20, "interactions": 90}})


def _latex(frame, references, monkeypatch, marks=None, **kw):
    # significance needs saved test examples: stand in for the paired test's verdict
    monkeypatch.setattr(tables, "significance_marks", lambda rows, metrics: {
        m: label for m, label in (marks or {}).items() if m in metrics and label in rows})
    return lb.render(frame, references, fmt="latex", commit=COMMIT, date=DATE, **kw)


def _body(tex: str) -> str:
    return "\n".join(line for line in tex.splitlines() if not line.startswith("%"))


def _assert_well_formed(tex: str) -> None:
    body = _body(tex)
    stack = []
    for begin, end in re.findall(r"\\begin\{(\w+)\}|\\end\{(\w+)\}", body):
        if begin:
            stack.append(begin)
        else:
            assert stack and stack.pop() == end, f"\\end{{{end}}} closes nothing open"
    assert not stack, f"unclosed environments {stack}"
    plain = re.sub(r"\\[{}%&#$_]", "", body)     # escaped specials are text
    depth = 0
    for char in plain:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, "a } closes no {"
    assert depth == 0 and plain.count("$") % 2 == 0
    for special in "_%#":   # (& is the column separator)
        assert special not in plain, f"unescaped {special!r}"
    assert body.isascii(), "pdflatex's default input encoding may not know every character"


def test_latex_tables(frame, references, monkeypatch):
    tex = _latex(frame, references, monkeypatch, marks={"NDCG@10": "sasrec"}, models=["sasrec", "nrms_glove", "pop"])
    _assert_well_formed(tex)
    assert tex.count(r"\begin{table}") == 3                     # two leaderboard tables + the datasets table
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 3
    full = tex.split(r"\end{table}")[0]
    assert r"\caption{ML-1m --- full ranking (all items, seen items masked). Data: 6 users, 20 items, " \
           r"90 interactions (identity \texttt{d1})." in full
    assert r"\begin{tabular}{lrrrrrr}" in full and r"Model & HR@1 & HR@5 & HR@10 & NDCG@5 & NDCG@10 & MRR \\" in full
    rows = {line.split(" & ")[0]: line for line in full.splitlines() if " & " in line}
    # best of our rows in bold, † on it, the seed group's std in small print
    assert r"\textbf{0.2022}$^\dagger$ {\scriptsize $\pm$ 0.0021}" in rows["sasrec"]
    assert rows["nrms\\_glove"].split(" & ")[5] == "0.1400"  # not bold, no dagger
    assert r"$^\dagger$: better than the runner-up" in full
    assert "pop" not in rows                                    # no run here: no row of dashes in a paper
    # published rows after a \midrule, with their (escaped) citation key and note
    lines = full.splitlines()
    published = next(i for i, line in enumerate(lines) if line.startswith("SASRec"))
    assert lines[published - 1] == r"\midrule"
    assert lines[published].startswith(r"SASRec\_v2 \{published\} [paper\_2019] & n/r & n/r & n/r & n/r & 0.1341")
    assert r"[paper\_2019] 50\% of users \& item \#1 \textasciitilde{} \$x\textasciicircum{}2\$" in full
    assert "% [paper_2019] A. Author & B. Author. 100% Recall. Venue 2019. <https://example.org/p>" in tex
    mind = tex.split(r"\end{table}")[1]
    assert r"Model & AUC & MRR & nDCG@5 & nDCG@10 \\" in mind and r"\midrule" + "\n" + "SASRec" not in mind
    assert r"$^\dagger$" not in mind                              # no mark in this table, so none said


def test_latex_datasets_table(frame, references, monkeypatch):
    datasets = _latex(frame, references, monkeypatch).split(r"\label{tab:datasets}")[1]
    assert r"ML-1m & \texttt{d1} & 6 & 20 & 90 & 75\% & 15.0 \\" in datasets
    assert r"MIND-small & \texttt{m1} & 3 & 40 news & 12 impressions & --- & 4.0 \\" in datasets


def test_no_runs_is_still_a_valid_file(references, monkeypatch):
    tex = _latex(pd.DataFrame(columns=["dataset", "identity", "protocol", "model", "variant"]), references,
                 monkeypatch)
    _assert_well_formed(tex)
    assert r"\begin{table}" not in tex and "No finished runs" in tex


@pytest.mark.parametrize("text, expected", [
    ("nrms_glove", r"nrms\_glove"),
    ("50% & #1 $5 {a} ~ ^ \\", r"50\% \& \#1 \$5 \{a\} \textasciitilde{} \textasciicircum{} \textbackslash{}"),
    ("a — b ± c † <x>", r"a --- b $\pm$ c $^\dagger$ \textless{}x\textgreater{}"),
])
def test_escape(text, expected):
    assert escape(text) == expected


def test_inline_code_spans():
    assert inline("identity `a_b`, see `[data]`.") == r"identity \texttt{a\_b}, see \texttt{[data]}."


def test_csv_has_one_column_per_metric(frame, references, monkeypatch):
    monkeypatch.setattr(tables, "significance_marks", lambda rows, metrics: {})
    table = pd.read_csv(io.StringIO(lb.render(frame, references, fmt="csv", commit=COMMIT, date=DATE)))
    assert not [c for c in table.columns if c.startswith("nDCG")]
    assert list(table.columns).count("NDCG@10") == 1 and "NDCG@10 std" in table.columns
    mind = table[(table["dataset"] == "mind_small")].set_index("model")
    assert mind.loc["nrms_glove", "NDCG@10"] == pytest.approx(0.63) and mind.loc["nrms_glove", "AUC"] == 0.60
    assert table.set_index("model").loc["sasrec", "NDCG@10 std"] == pytest.approx(0.0021)
    # json keeps MIND's own names
    json_text = lb.render(frame, references, fmt="json", commit=COMMIT, date=DATE)
    assert '"nDCG@10": 0.63' in json_text


def test_markdown_datasets_section(frame, references, monkeypatch):
    monkeypatch.setattr(tables, "significance_marks", lambda rows, metrics: {})
    text = lb.render(frame, references, commit=COMMIT, date=DATE)
    section = text.split("### Datasets")[1].split("###")[0]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    assert lines[0] == ["Dataset", "Identity", "Users", "Items", "Interactions", "Density", "Mean length"]
    assert lines[2] == ["ML-1m", "`d1`", "6", "20", "90", "75%", "15.0"]
    assert lines[3] == ["MIND-small", "`m1`", "3", "40 news", "12 impressions", "—", "4.0"]
    assert len(lines) == 4                                       # each identity once, whatever its protocols


def test_bench_leaderboard_writes_tex(tmp_path, fresh_store, capsys):
    import mlflow
    from test_leaderboard import _log

    uri = fresh_store(tmp_path)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("lb", artifact_location=(tmp_path / "artifacts").as_uri())
    _log(client, exp, model="nrms_glove", dataset="ml-1m", protocol="full", valid=0.2, test=0.2)
    out = tmp_path / "table.tex"
    assert cli.main(["leaderboard", "--tracking-uri", uri, "--out", str(out)]) == 0
    tex = out.read_text()
    _assert_well_formed(tex)
    assert tex.startswith("% recboard leaderboard") and r"nrms\_glove & 0.2000" in tex
    capsys.readouterr()
    assert cli.main(["leaderboard", "--tracking-uri", uri, "--format", "latex"]) == 0
    assert r"\begin{tabular}" in capsys.readouterr().out
