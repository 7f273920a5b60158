"""Results you can trust, as a user runs them: data identity, seed groups, paired
significance tests, saved models re-scored under another protocol, and the one-line errors
that write nothing."""
import json

import numpy as np
import pytest

from recboard.benchmarks import cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

BASE = ["--set", "device=cpu", "--quiet"]
TINY = ["--set", "epochs=2", "--set", "hidden_size=16", "--set", "max_len=12", *BASE]


@pytest.fixture(scope="module")
def home(tmp_path_factory, fresh_store):
    """One MLflow store with: a SASRec group of 3 seeds, a single BERT4Rec run and a pop run."""
    root = tmp_path_factory.mktemp("trust")
    uri = fresh_store(root)
    env = {"MLFLOW_TRACKING_URI": uri, "RECBOARD_HOME": str(root), "RECBOARD_CACHE": str(root / "cache")}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        out = {}
        for name, args in (("group", ["--model", "sasrec", "--seeds", "1,2,3", *TINY]),
                           ("bert4rec", ["--model", "bert4rec", *TINY]), ("pop", ["--model", "pop", *BASE])):
            path = root / f"{name}.json"
            assert cli.main(["run", *args, "--dataset", "synthetic_seq", "--json", str(path)]) == 0
            out[name] = json.loads(path.read_text())
        yield root, env, out


@pytest.fixture
def in_home(home, monkeypatch):
    root, env, out = home
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return root, out


def test_seed_group_mean_and_std_are_those_of_its_runs(in_home):
    _, out = in_home
    group = out["group"]
    assert [r["seed"] for r in group["runs"]] == [1, 2, 3] and group["group_run_id"]
    for metric, mean in group["metrics"].items():
        values = [r["metrics"][metric] for r in group["runs"]]
        assert mean == pytest.approx(np.mean(values))
        assert group["metrics_std"][metric] == pytest.approx(np.std(values, ddof=1))
    assert len({r["run_id"] for r in group["runs"]}) == 3
    assert len({json.dumps(r["metrics"]) for r in group["runs"]}) > 1   # the seeds really differ


def test_compare_p_value_is_scipys_paired_t_test(in_home, capsys, tmp_path):
    from scipy import stats

    from recboard.benchmarks.tracking.saved import load_examples

    _, out = in_home
    a, b = out["bert4rec"]["mlflow_run_id"], out["pop"]["mlflow_run_id"]
    path = tmp_path / "cmp.json"
    assert cli.main(["compare", a, b, "--metric", "NDCG@10", "--json", str(path)]) == 0
    result = json.loads(path.read_text())["metrics"]["NDCG@10"]
    ea, eb = load_examples(a), load_examples(b)
    assert result["p_ttest"] == pytest.approx(stats.ttest_rel(ea["NDCG@10"], eb["NDCG@10"]).pvalue)
    assert result["diff"] == pytest.approx(ea["NDCG@10"].mean() - eb["NDCG@10"].mean())
    assert result["ci_low"] < result["diff"] < result["ci_high"]
    assert result["boot_ci_low"] < result["diff"] < result["boot_ci_high"]
    assert "p (paired t)" in capsys.readouterr().out
    # a seed group compares through each user's mean over its seeds
    assert cli.main(["compare", out["group"]["group_run_id"], b, "--metric", "HR@10"]) == 0
    assert "sasrec (3 runs)" in capsys.readouterr().out


def test_eval_reproduces_the_test_metrics_and_rescoring_gives_sampled_numbers(in_home, tmp_path):
    from recboard.benchmarks.tracking.store import get_run

    _, out = in_home
    source = out["bert4rec"]
    same, sampled = tmp_path / "same.json", tmp_path / "sampled.json"
    assert cli.main(["eval", "--run", source["mlflow_run_id"], "--json", str(same)]) == 0
    assert json.loads(same.read_text())["metrics"] == source["metrics"]
    assert cli.main(["eval", "--run", source["mlflow_run_id"], "--set", "protocol=sampled-pop100",
                     "--json", str(sampled)]) == 0
    rescored = json.loads(sampled.read_text())
    assert rescored["protocol"] == "sampled-pop100" and rescored["metrics"]["HR@10"] > source["metrics"]["HR@10"]
    assert rescored["valid_metrics"] == pytest.approx(source["valid_metrics"])   # selection stays the source's
    tags = get_run(rescored["mlflow_run_id"]).data.tags
    assert tags["recboard.source_run"] == source["mlflow_run_id"] and tags["recboard.kind"] == "eval"


def test_eval_of_a_seed_group_rescores_every_seed_into_one_leaderboard_row(in_home, tmp_path):
    from recboard.leaderboard import render

    _, out = in_home
    source, path = out["group"], tmp_path / "group.json"
    assert cli.main(["eval", "--run", source["group_run_id"], "--set", "protocol=sampled-pop100",
                     "--json", str(path)]) == 0
    group = json.loads(path.read_text())
    assert group["seeds"] == [1, 2, 3] and group["protocol"] == "sampled-pop100" and group["group_run_id"]
    for rescored, trained in zip(group["runs"], source["runs"]):
        assert rescored["valid_metrics"] == pytest.approx(trained["valid_metrics"])   # each seed's own selection
        assert rescored["metrics"]["HR@10"] > trained["metrics"]["HR@10"]
    assert group["metrics"]["NDCG@10"] == pytest.approx(np.mean([r["metrics"]["NDCG@10"] for r in group["runs"]]))
    sampled = render.build(datasets=["synthetic_seq"], references=False).split("popularity-sampled negatives)")[1]
    sasrec = [line for line in sampled.split("### ")[0].splitlines() if line.startswith("| sasrec")]
    assert len(sasrec) == 1 and "|       3 |" in sasrec[0] and f"{group['metrics']['NDCG@10']:.4f}" in sasrec[0]
    assert "| this repo, re-scored |" in sasrec[0]


def test_leaderboard_shows_groups_eval_runs_and_significance(in_home):
    from recboard.leaderboard import render

    _, out = in_home
    text = render.build(datasets=["synthetic_seq"], references=False)
    full = text.split("### ")[1]
    sasrec = next(line for line in full.splitlines() if line.startswith("| sasrec"))
    mean = f"{out['group']['metrics']['NDCG@10']:.4f}"
    assert f"**{mean}** ± {out['group']['metrics_std']['NDCG@10']:.4f}†" in sasrec and "|       3 |" in sasrec
    assert "†" in full                      # sasrec beats pop on 600 users by a wide margin
    assert "sampled ranking (target + 100 popularity-sampled negatives)" in text   # the eval run's table


@pytest.mark.parametrize("argv, message, code", [
    (["eval", "--run", "0" * 32], "no MLflow run '00000000000000000000000000000000'", 1),
    (["run", "--model", "pop", "--dataset", "synthetic_seq", "--seeds", "1,two"], "--seeds expects comma-separated", 2),
])
def test_bad_input_is_one_line_and_writes_nothing(in_home, capsys, tmp_path, argv, message, code):
    path = tmp_path / "out.json"
    assert cli.main([*argv, "--json", str(path)]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not path.exists()


def test_a_run_without_a_saved_model_cannot_be_rescored(in_home, capsys):
    path_free = ["run", "--model", "pop", "--dataset", "synthetic_seq", "--set", "save_model=false", *BASE]
    assert cli.main(path_free) == 0
    run_id = capsys.readouterr().out.split("mlflow run ")[1].split()[0]
    assert cli.main(["eval", "--run", run_id]) == 1
    assert f"run {run_id} has no saved model" in capsys.readouterr().err


def test_runs_on_different_data_are_not_compared(in_home, capsys, tmp_path):
    _, out = in_home
    other = tmp_path / "other.json"
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_mind", "--set", "device=cpu", "--quiet",
                     "--json", str(other)]) == 0
    mind_run = json.loads(other.read_text())["mlflow_run_id"]
    capsys.readouterr()
    assert cli.main(["compare", out["pop"]["mlflow_run_id"], mind_run]) == 1
    err = capsys.readouterr().err
    assert "were scored on different data" in err and len(err.strip().splitlines()) == 1


def test_same_interactions_from_two_files_share_an_identity(tmp_path):
    from recboard.datasets import movielens

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    rows = [(u, i, 100 * u + k) for u in range(1, 7) for k, i in enumerate((10, 20, 30, 40, 50))]
    (tmp_path / "a" / "ratings.dat").write_text("".join(f"{u}::{i}::5::{t}\n" for u, i, t in rows))
    (tmp_path / "b" / "ml-1m.txt").write_text("".join(f"{u} {i}\n" for u, i, _ in rows))
    from_dat = movielens.build("ml-1m", tmp_path / "a", download=False)
    from_txt = movielens.build("ml-1m", tmp_path / "b", download=False)
    assert from_dat.stats["source"] != from_txt.stats["source"]
    assert from_dat.identity() == from_txt.identity()
    (tmp_path / "b" / "ml-1m.txt").write_text("".join(f"{u} {i}\n" for u, i, _ in rows[:-1]))
    assert movielens.build("ml-1m", tmp_path / "b", download=False).identity() != from_dat.identity()


def test_prepare_prints_the_identity(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path))
    assert cli.main(["prepare", "--dataset", "synthetic_seq"]) == 0
    out = capsys.readouterr().out
    assert "identity " in out and "600 users" in out


def test_tune_final_seeds_reruns_the_best_trial_as_a_group(in_home, tmp_path):
    path = tmp_path / "final.json"
    assert cli.main(["tune", "--model", "sasrec", "--dataset", "synthetic_seq", "--trials", "2", "--study", "fs",
                     "--space", "lr=0.004:0.009", *TINY[:-1], "--set", "patience=0", "--out-dir", str(tmp_path),
                     "--final-seeds", "2", "--json", str(path)]) == 0
    from recboard.benchmarks.tracking.store import get_run

    group = json.loads(path.read_text())
    assert group["seeds"] == [1, 2] and len(group["runs"]) == 2
    parent = get_run(group["group_run_id"]).data
    assert parent.tags["recboard.study"] == "fs" and parent.tags["recboard.kind"] == "group"
    assert 0.004 <= float(parent.params["lr"]) <= 0.009     # the best trial's, not the preset's 0.003


def test_significance_marks_skip_metrics_too_few_examples_define():
    """An AUC that is undefined (NaN) on nearly every impression cannot be tested: no mark,
    and no crash of the leaderboard."""
    from unittest import mock

    import numpy as np

    from recboard.leaderboard import runs

    examples = {"a": {"row": np.arange(3), "AUC": np.array([np.nan, np.nan, 1.0])},
                "b": {"row": np.arange(3), "AUC": np.array([0.5, np.nan, np.nan])}}
    rows = {"a": {"run_id": "a", "AUC": 0.9}, "b": {"run_id": "b", "AUC": float("nan")}}
    with mock.patch("recboard.benchmarks.evaluation.significance.run_examples", lambda ref, store=None: ({}, examples[ref])):
        assert runs.significance_marks(rows, ["AUC"]) == {}
        rows["b"]["AUC"] = 0.5
        assert runs.significance_marks(rows, ["AUC"]) == {}


def test_an_empty_split_keeps_no_examples():
    from recboard.benchmarks.evaluation.metrics import MeanAccumulator

    assert list(MeanAccumulator(keep_examples=True).examples()["row"]) == []
