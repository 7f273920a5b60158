"""What a user who knows MLflow finds: the dataset as an ``mlflow.data`` input carrying its
identity, statistics as params (not metrics), the experiment chosen with
``MLFLOW_EXPERIMENT_NAME`` or ``--experiment``, system metrics when psutil is installed."""
from __future__ import annotations

import importlib.util
import json

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("torch")

from recboard.benchmarks import config as C  # noqa: E402
from recboard.benchmarks.tracking import store as tracking  # noqa: E402
from recboard.benchmarks.training.runner import run  # noqa: E402

TINY = ["epochs=1", "hidden_size=8", "num_heads=1", "num_layers=1", "max_len=8", "batch_size=32",
        "max_steps_per_epoch=2", "device=cpu"]


def test_dataset_is_an_input_and_statistics_are_params(store, data):
    result = run(C.resolve("sasrec", "synthetic_seq", TINY), data=data)
    recorded = store.get_run(result.mlflow_run_id)
    (given,) = recorded.inputs.dataset_inputs
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "training"}
    assert given.dataset.name == "synthetic_seq" and given.dataset.source_type == "code"
    assert given.dataset.digest == data.identity() == result.stats["identity"]
    profile = json.loads(given.dataset.profile)
    assert (profile["users"], profile["items"], profile["interactions"]) == (60, 40, data.stats["interactions"])
    assert profile["identity"] == data.identity()
    params, metrics = recorded.data.params, recorded.data.metrics
    assert params["data.users"] == "60" and params["data.seed"] == "0" and params["data.identity"] == data.identity()
    assert params["model.n_params"] == str(result.n_params) and result.n_params > 0
    assert not [k for k in metrics if k.startswith("data/") or k == "n_params"], sorted(metrics)
    assert "test/NDCG_at_10" in metrics and "best_epoch" in metrics

    from recboard.leaderboard.render import collect      # the leaderboard still reads the size
    assert collect(store.tracking_uri)["n_params"].tolist() == [result.n_params]


def test_experiment_comes_from_the_flag_then_mlflows_variable_then_ours(monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert tracking.experiment_name() == "recboard"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    assert tracking.experiment_name() == "mine" and tracking.experiment_name("flag") == "flag"


def test_runs_go_to_the_experiment_named_by_env_or_flag(store, monkeypatch, capsys):
    from recboard.benchmarks import cli

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_seq", "--quiet"]) == 0
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_seq", "--quiet",
                     "--experiment", "from-flag"]) == 0
    capsys.readouterr()
    for name in ("from-env", "from-flag"):
        experiment = store.get_experiment_by_name(name)
        assert experiment is not None, name
        runs = store.search_runs([experiment.experiment_id])
        assert [r.data.tags["recboard.model"] for r in runs] == ["pop"], name
    assert store.get_experiment_by_name("recboard") is None


def test_system_metrics_follow_psutil_and_mlflows_switch(monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psutil" else real(name, *a))
    assert tracking.system_metrics() is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "psutil" else real(name, *a))
    assert tracking.system_metrics() is True
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    assert tracking.system_metrics() is None          # MLflow reads its own switch


@pytest.mark.skipif(importlib.util.find_spec("psutil") is None, reason="system metrics need psutil")
def test_system_metrics_are_sampled_on_runs_not_on_trials(store, data, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")
    monkeypatch.setattr(tracking, "git_commit", lambda: "abc")
    parent = tracking.Tracker("parent", {"recboard.kind": "tune"})
    import time
    time.sleep(0.5)
    child = tracking.Tracker("child", {"recboard.kind": "trial"}, nested=True)
    time.sleep(0.3)
    child.end()
    parent.end()
    assert any(k.startswith("system/") for k in store.get_run(parent.run_id).data.metrics)
    assert not any(k.startswith("system/") for k in store.get_run(child.run_id).data.metrics)
