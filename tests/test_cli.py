"""The ``bench`` command as a user runs it."""
import json
import subprocess
import sys

import pytest

from recboard.benchmarks import cli


def test_help_imports_no_heavy_library():
    code = ("import sys; from recboard.benchmarks import cli; cli.build_parser().format_help(); "
            "cli.main(['list']); heavy = {'torch', 'transformers', 'mlflow', 'polars', 'optuna'} & set(sys.modules); "
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "bert4rec" in out.stdout and "mind_small" in out.stdout


def test_list_describes_every_model_and_dataset(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("random", "pop", "bert4rec", "sasrec", "nrms_glove", "nrms_bert", "ml-1m", "beauty",
                 "mind_small", "synthetic_seq", "synthetic_mind"):
        assert name in out


def test_unknown_model_is_a_clear_error(capsys):
    assert cli.main(["run", "--model", "sasrek", "--dataset", "ml-1m", "--no-track"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'sasrek'" in err and "did you mean 'sasrec'" in err


def test_bad_set_value_is_a_clear_error(capsys):
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_seq", "--set", "epochs=x", "--no-track"]) == 2
    assert "'epochs' expects int, got 'x'" in capsys.readouterr().err


def test_cuda_requested_without_gpu_is_a_clear_error(capsys, tmp_path, monkeypatch):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_seq", "--set", "device=cuda",
                     "--no-track"]) == 1     # the work failed; the command itself was well formed
    assert "no CUDA GPU is available" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_then_run_with_json_and_mlflow(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert cli.main(["prepare", "--dataset", "synthetic_seq"]) == 0
    out = capsys.readouterr().out
    assert "users" in out and "items" in out
    result_path = tmp_path / "out" / "pop.json"
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_seq", "--json", str(result_path),
                     "--quiet"]) == 0
    result = json.loads(result_path.read_text())
    assert result["model"] == "pop" and result["protocol"] == "full"
    assert 0.0 <= result["metrics"]["NDCG@10"] <= result["metrics"]["HR@10"] <= 1.0
    assert result["mlflow_run_id"]
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["test/NDCG_at_10"] == pytest.approx(result["metrics"]["NDCG@10"])
    assert run.data.tags["recboard.fingerprint"] == result["dataset_stats"]["fingerprint"]
