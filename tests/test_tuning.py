"""`bench tune`: a real Optuna study over SASRec on synthetic sequences -- resumes to the
requested total, prunes bad trials, nests one MLflow run per trial, writes plots; every
study in one shared storage with its metric named; Ctrl-C leaves a FAIL trial; bad search
spaces, samplers and pruners are clear errors."""
from __future__ import annotations

import os

import pytest

optuna = pytest.importorskip("optuna")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("torch")

from recboard.benchmarks.experiments import tuning  # noqa: E402
from recboard.benchmarks.experiments.search_space import (TuningError, config_key_types, default_space,  # noqa: E402
                                              parse_space)

PNG = b"\x89PNG\r\n\x1a\n"
# tiny and fast; the search is over lr (one choice that cannot learn in two epochs) and dropout
SETS = {"epochs": 2, "patience": 0, "device": "cpu", "hidden_size": 16, "num_heads": 1, "num_layers": 1,
        "max_len": 12, "batch_size": 32, "max_steps_per_epoch": 3, "weight_decay": 0.0, "eval_batch_size": 256}
SPACE = ["lr=1e-7,1e-6,5e-3", "dropout=0.0:0.3"]


def shared_storage(root):
    """The one storage every study lives in (RECBOARD_HOME is root / "home" here)."""
    return f"sqlite:///{root / 'home' / 'optuna.db'}"


@pytest.fixture(scope="module")
def env(tmp_path_factory, fresh_store):
    """Own MLflow store and RECBOARD_HOME for this module; restored afterwards."""
    root = tmp_path_factory.mktemp("tune")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "RECBOARD_HOME")}
    previous_uri = mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = fresh_store(root)
    os.environ["RECBOARD_HOME"] = str(root / "home")
    from recboard.datasets.synthetic import generate_sequences
    yield root, generate_sequences(n_users=150, n_items=60, min_len=8, max_len=20)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    mlflow.set_tracking_uri(previous_uri)


@pytest.fixture(scope="module")
def study(env):
    root, data = env
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    kwargs = dict(space=SPACE, sets=SETS, data=data, out_dir=root / "out", pruner=pruner, seed=0)
    first = tuning.tune("sasrec", "synthetic_seq", trials=3, **kwargs)
    after_first = [t.state for t in first.trials]
    second = tuning.tune("sasrec", "synthetic_seq", trials=5, **kwargs)
    return root, after_first, second


def _finished(trials):
    return [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def test_resumes_to_the_requested_total_and_prunes(study):
    root, after_first, second = study
    S = optuna.trial.TrialState
    assert len(after_first) == 3 and all(s in (S.COMPLETE, S.PRUNED) for s in after_first)
    # the shared storage under RECBOARD_HOME, not a file beside the report
    assert (root / "home" / "optuna.db").exists() and not list((root / "out").glob("*.db"))
    reloaded = optuna.load_study(study_name="sasrec-synthetic_seq", storage=shared_storage(root))
    assert reloaded.metric_names == ["valid NDCG@10"]                    # named for optuna-dashboard
    assert len(_finished(reloaded.trials)) == 5 and [t.number for t in reloaded.trials] == [0, 1, 2, 3, 4]
    pruned = [t for t in reloaded.trials if t.state == S.PRUNED]
    complete = [t for t in reloaded.trials if t.state == S.COMPLETE]
    assert pruned and complete, [(t.state, t.params) for t in reloaded.trials]
    # pruned trials stopped after epoch 1, below what the good trials reached there
    for t in pruned:
        assert max(t.intermediate_values) == 1
        assert t.intermediate_values[1] < max(c.intermediate_values[1] for c in complete)
    best = max(complete, key=lambda t: t.value)
    assert best.params["lr"] == 5e-3 and best.value > 0.1       # the learnable choice wins
    assert tuning.best_params("sasrec-synthetic_seq") == best.params     # --from-study finds it there
    # a study name stays bound to its model: resuming it with another one is refused
    with pytest.raises(TuningError, match="tunes model 'sasrec', not 'bert4rec'"):
        tuning.tune("bert4rec", "synthetic_seq", trials=6, study="sasrec-synthetic_seq", sets=SETS,
                    out_dir=root / "out", tracking=False)


def test_one_parent_run_per_call_and_one_nested_run_per_trial(study):
    root, _, second = study
    runs = mlflow.search_runs(search_all_experiments=True)
    runs = runs[runs["tags.recboard.study"] == "sasrec-synthetic_seq"]   # other tests add studies
    parents = runs[runs["tags.recboard.kind"] == "tune"]
    trials = runs[runs["tags.recboard.kind"] == "trial"]
    assert len(parents) == 2 and set(parents["status"]) == {"FINISHED"}
    assert set(parents["tags.recboard.study"]) == {"sasrec-synthetic_seq"}
    assert len(trials) == 5 and set(trials["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    for t in second.trials:
        row = trials[trials["tags.recboard.trial"] == str(t.number)].iloc[0]
        assert row["params.lr"] == str(t.params["lr"]) and row["params.dropout"] == str(t.params["dropout"])
        assert row["params.hidden_size"] == "16" and row["tags.recboard.study"] == "sasrec-synthetic_seq"
        assert row["status"] == ("KILLED" if t.state == optuna.trial.TrialState.PRUNED else "FINISHED")
        assert t.user_attrs["mlflow_run_id"] == row["run_id"]
    latest = parents.sort_values("start_time").iloc[-1]
    assert latest["metrics.best_valid/NDCG_at_10"] == pytest.approx(second.best_value)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(latest["run_id"])}
    assert {"trials.md", "trials.csv", "optimization_history.png", "param_lr.png", "param_dropout.png",
            "param_importances.png", "contour.png"} <= artifacts
    assert set(parents["params.sampler"]) == {"tpe"} and set(parents["params.pruner"]) == {"MedianPruner"}


def test_plots_and_trials_table_are_written(study):
    root, _, _ = study
    out = root / "out"
    for name in ("optimization_history.png", "learning_curves.png", "param_lr.png", "param_dropout.png",
                 "param_importances.png", "contour.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    table = (out / "trials.md").read_text()
    assert "PRUNED" in table and "COMPLETE" in table and "Best: trial" in table and "nan" not in table


def test_interrupted_trial_is_stored_as_failed(env, monkeypatch):
    root, data = env
    from recboard.benchmarks.training import runner

    real_run = runner.run

    def interrupting_run(cfg, *, on_epoch=None, **kwargs):
        def on_epoch_then_ctrl_c(epoch, valid):
            on_epoch(epoch, valid)
            raise KeyboardInterrupt
        return real_run(cfg, on_epoch=on_epoch_then_ctrl_c, **kwargs)

    monkeypatch.setattr(runner, "run", interrupting_run)
    with pytest.raises(KeyboardInterrupt):
        tuning.tune("sasrec", "synthetic_seq", trials=2, study="interrupted", space=SPACE, sets=SETS, data=data,
                    out_dir=root / "interrupted")
    stored = optuna.load_study(study_name="interrupted", storage=shared_storage(root))
    assert [t.state for t in stored.trials] == [optuna.trial.TrialState.FAIL]
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`recboard.study` = 'interrupted'")
    assert sorted(zip(runs["tags.recboard.kind"], runs["status"])) == [("trial", "KILLED"), ("tune", "KILLED")]
    assert mlflow.active_run() is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="pop"), "model 'pop' has no hyper-parameters to tune .*models with a search space: .*sasrec"),
    (dict(space=["mask_ratio=0.1:0.5"]), "unknown config key 'mask_ratio'; valid keys: .*dropout.*lr"),
    (dict(space=["lr=0.1:0.01"]), "needs low < high"),
    (dict(space=["lr=3e-4"]), "use --set lr=3e-4"),
    (dict(space=["num_layers=1:4:log"]), "log scale is for float keys"),
    (dict(space=["attention=1:2"]), "give choices"),
    (dict(space=["num_layers=one,two"]), "expects int"),
    (dict(space=["lr=1e-4:1e-2"], sets={"lr": 1e-3}), "lr both fixed with --set and searched with --space"),
    (dict(trials=0), "--trials must be >= 1"),
    (dict(timeout="soon"), "--timeout expects seconds"),
    (dict(study="a/b", out_dir=None), "becomes a file name"),      # names the default report folder
    (dict(sampler="annealing"), "--sampler must be one of tpe, random, qmc, gp, cmaes"),
    (dict(pruner="early"), "--pruner must be one of median, hyperband, successive-halving, none"),
])
def test_bad_arguments_are_clear_errors(env, kwargs, message):
    root, data = env
    args = dict(model="sasrec", dataset="synthetic_seq", trials=1, data=data, out_dir=root / "never", tracking=False)
    args.update(kwargs)
    with pytest.raises(TuningError, match=message):
        tuning.tune(**args)


def test_space_parsing_follows_config_types():
    from recboard.benchmarks import config as C

    types = config_key_types(C.resolve("sasrec", "synthetic_seq"))
    base = default_space("sasrec")
    space = parse_space(["lr=1e-4:1e-2", "dropout=0:0.5", "num_layers=1:3", "hidden_size=32,64",
                         "weight_decay=1e-6:1e-2:log", "attention=sdpa,eager"], types, base)
    assert space == {"lr": ("logfloat", 1e-4, 1e-2), "dropout": ("float", 0.0, 0.5), "num_layers": ("int", 1, 3),
                     "hidden_size": ("categorical", [32, 64]), "weight_decay": ("logfloat", 1e-6, 1e-2),
                     "attention": ("categorical", ["sdpa", "eager"])}
    assert tuning.parse_duration("90m") == 5400 and tuning.parse_duration(30) == 30 and tuning.parse_duration(None) is None


def test_best_params_errors(env):
    root, _ = env
    with pytest.raises(TuningError, match="no study 'missing'"):
        tuning.best_params("missing")
    storage = f"sqlite:///{root / 'empty.db'}"
    optuna.create_study(study_name="empty", storage=storage)
    with pytest.raises(TuningError, match="studies there: empty"):
        tuning.best_params("other", storage=storage)
    with pytest.raises(TuningError, match="no complete trial"):
        tuning.best_params("empty", storage=storage)


def test_tags_and_run_lookup_go_through_tracking(monkeypatch):
    import inspect
    import re

    from recboard.benchmarks.tracking import store as tracking

    monkeypatch.setenv("RECBOARD_GIT_COMMIT", "abc1234")
    assert tracking.run_tags(kind="trial", model="sasrec", dataset="ml-1m", task="sequence", protocol="full",
                             metric="NDCG@10", study="s", trial=3) == {
        "recboard.kind": "trial", "recboard.model": "sasrec", "recboard.dataset": "ml-1m",
        "recboard.task": "sequence", "recboard.protocol": "full", "recboard.metric": "NDCG@10",
        "recboard.git_commit": "abc1234", "recboard.study": "s", "recboard.trial": "3"}
    assert tracking.tag_filter({"recboard.study": "s", "recboard.trial": 3}, status="FINISHED") == (
        "attributes.status = 'FINISHED' and tags.`recboard.study` = 's' and tags.`recboard.trial` = '3'")
    with pytest.raises(ValueError, match="quote"):               # never spliced into the query
        tracking.tag_filter({"recboard.study": "it's"})
    assert tracking.find_run_id({"recboard.study": "it's"}) is None
    assert not re.search(r"^\s*(import|from)\s+mlflow\b", inspect.getsource(tuning), re.MULTILINE)


def test_sampler_and_pruner_by_name_share_the_storage_and_experiment(env, study, monkeypatch):
    """--sampler random --pruner none: the lr that cannot learn is not pruned; the study joins
    the others in the one storage (one optuna-dashboard shows them all); --experiment puts
    the parent run and, with it, every trial's run in that MLflow experiment."""
    root, data = env
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    tried = tuning.tune("sasrec", "synthetic_seq", trials=2, study="random-none", space=["lr=1e-7,1e-6"],
                        sets=SETS, data=data, out_dir=root / "random", sampler="random", pruner="none",
                        experiment="tuning-experiment")
    assert [t.state for t in tried.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {"random-none", "sasrec-synthetic_seq"} <= set(optuna.study.get_all_study_names(shared_storage(root)))
    experiment = mlflow.get_experiment_by_name("tuning-experiment")
    runs = mlflow.search_runs([experiment.experiment_id])
    assert sorted(runs["tags.recboard.kind"]) == ["trial", "trial", "tune"]
    assert set(runs["tags.recboard.study"]) == {"random-none"} and set(runs["params.sampler"].dropna()) == {"random"}


def test_samplers_and_pruners_are_built_by_name():
    from recboard.benchmarks.experiments.search_space import make_pruner, make_sampler

    assert isinstance(make_sampler("tpe", 0), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("random", 0), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("qmc", 0), optuna.samplers.QMCSampler)
    assert isinstance(make_pruner("hyperband", 20), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("successive-halving", 20), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("none", 20), optuna.pruners.NopPruner)
    given = optuna.pruners.MedianPruner()
    assert make_pruner(given, 20) is given
    import importlib.util
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(TuningError, match="pip install cmaes"):
            make_sampler("cmaes", 0)
