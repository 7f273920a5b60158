"""Bad input never reaches training: a config value out of its model's range is a usage
error (exit 2) when the config is resolved, before data is read or a run starts; a damaged
saved model is one line naming the artifact and the run; options that mean the same thing
are accepted by every command that has them; a bootstrap p-value is never 0."""
import numpy as np
import pytest

from recboard.benchmarks import cli

pytestmark = [pytest.mark.usefixtures("one_thread")]

TINY = ["--set", "device=cpu", "--set", "epochs=1", "--set", "hidden_size=8", "--set", "max_len=8", "--quiet"]


@pytest.fixture
def store(tmp_path, monkeypatch, fresh_store):
    uri = fresh_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECBOARD_HOME", str(tmp_path))
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    return tmp_path, uri


def n_runs(uri: str) -> int:
    import mlflow
    return len(mlflow.MlflowClient(uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()]))


@pytest.mark.parametrize("argv", [
    ["config", "--model", "bert4rec", "--dataset", "synthetic_seq", "--set", "mask_ratio=1.5"],
    ["run", "--model", "bert4rec", "--dataset", "synthetic_seq", "--set", "mask_ratio=1.5"],
    ["run", "--model", "sasrec", "--dataset", "synthetic_seq", "--set", "dropout=1"],
    ["run", "--model", "sasrec", "--dataset", "synthetic_seq", "--set", "attention=flash3"],
    ["run", "--model", "nrms_glove", "--dataset", "synthetic_mind", "--set", "pooling=max"],
    ["sweep", "--model", "bert4rec", "--dataset", "synthetic_seq", "--param", "mask_ratio=0.5,1.5"],
    ["tune", "--model", "sasrec", "--dataset", "synthetic_seq", "--set", "num_heads=3", "--trials", "1"],
], ids=["config", "run", "dropout", "choice", "nrms", "sweep", "tune"])
def test_an_out_of_range_model_key_is_a_usage_error_before_any_data_or_run(argv, store, capsys):
    root, uri = store
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config key" in err and "must be" in err
    assert not (root / "cache").exists()     # no data was read (nothing prepared)
    assert n_runs(uri) == 0                    # no MLflow run was started


def test_a_plugin_config_check_is_called_too():
    from recboard.benchmarks.config import ConfigError, check_model_config

    class Config:
        def check(self):
            raise ValueError("my config key 'width' must be even, got 3")

    class Run:
        model = Config()

    with pytest.raises(ConfigError, match="'width' must be even"):
        check_model_config(Run())


def test_a_damaged_saved_model_is_one_line_naming_the_artifact_and_run(store, capsys):
    import mlflow

    _, uri = store
    assert cli.main(["run", "--model", "sasrec", "--dataset", "synthetic_seq", *TINY]) == 0
    run_id = capsys.readouterr().out.split("mlflow run ")[1].split()[0]
    # truncate the stored artifact itself, where the run's artifact root keeps it
    mlflow.set_tracking_uri(uri)
    stored = mlflow.get_run(run_id).info.artifact_uri.replace("file://", "") + "/model/weights.safetensors"
    data = open(stored, "rb").read()
    with open(stored, "wb") as f:
        f.write(data[:5])
    before = n_runs(uri)
    assert cli.main(["eval", "--run", run_id, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"run {run_id}" in err and "model/weights.safetensors is damaged" in err
    assert n_runs(uri) == before


@pytest.mark.parametrize("command", ["run", "eval", "compare", "tune", "sweep", "demo"])
def test_shared_options_are_accepted_wherever_they_make_sense(command):
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    options = {o for a in sub._actions for o in a.option_strings}
    assert {"--quiet", "--tracking-uri"} <= options
    assert "--experiment" in options or command == "compare"
    assert "--json" in options or command == "demo"


def test_tracking_uri_option_points_the_command_at_that_store(store, tmp_path, fresh_store):
    (tmp_path / "other").mkdir()
    other = fresh_store(tmp_path / "other")
    _, default_uri = store
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_seq", "--set", "device=cpu", "--quiet",
                     "--tracking-uri", other, "--experiment", "elsewhere"]) == 0
    assert n_runs(other) == 1 and n_runs(default_uri) == 0


def test_bootstrap_p_is_never_zero_and_prints_as_its_floor():
    from recboard.benchmarks.evaluation.significance import _p, paired_test

    rng = np.random.default_rng(0)
    a = rng.random(500)
    t = paired_test(a + 1.0 + 0.01 * rng.random(500), a, n_boot=999)   # B always on one side of 0
    assert t["p_bootstrap"] == pytest.approx(2 / 1000)                    # (0 + 1) / (B + 1), two-sided
    assert _p(t["p_bootstrap"], floor=2 / (t["n_bootstrap"] + 1)) == "<=0.002"
    same = paired_test(a, a + 0.001 * rng.standard_normal(500), n_boot=999)
    assert 0.002 < same["p_bootstrap"] <= 1.0
