"""``bench tune``: Optuna search over a model's hyper-parameters, tracked in MLflow.

* Search space: the model module's ``SEARCH_SPACE`` overridden per key with ``--space``,
  minus keys fixed with ``--set`` (``recboard.benchmarks.experiments.search_space``).
* ``--sampler`` (TPE by default, seeded) and ``--pruner`` (median by default) on the
  per-epoch validation metric (the runner's ``on_epoch`` hook), direction maximize; the
  study's metric is named ("valid NDCG@10") for optuna-dashboard.
* Storage: every study in one sqlite file, ``~/recboard/optuna.db`` (under
  ``RECBOARD_HOME``), so one ``optuna-dashboard sqlite:///$HOME/recboard/optuna.db`` shows
  them all; or any Optuna RDB URL (``--storage``).
  Studies are opened with ``load_if_exists``: re-running resumes, and ``trials=N`` means
  "until the study holds N complete + pruned trials" (3 then 5 gives 5 in total). An
  interrupted trial (Ctrl-C included) is stored as FAIL and the interrupt re-raised.
* MLflow: one parent run per ``tune()`` call (``recboard.kind=tune``) with one nested run per
  trial (``recboard.kind=trial``, ``recboard.study``); at the end a trials table and PNG plots
  (validation metric vs each tuned key, optimisation history, learning curves, parameter
  importance, contour of the two most important keys) go to ``out_dir`` (default
  ``~/recboard/studies/<study>/``) and onto the parent run as artifacts.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from recboard.benchmarks.config import SAFE_NAME
from recboard.benchmarks.experiments.search_space import TuningError, make_pruner, make_sampler, resolve_search, suggest

MAX_FAILURES_IN_ROW = 5
TRIALS_TABLE = "trials.md"


# --------------------------------------------------------------------------- storage

def parse_duration(value) -> float | None:
    """3600, "3600", "90s", "90m", "1.5h" -> seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(value).lower())
        if not match:
            raise TuningError(f"--timeout expects seconds or a duration like 90m / 2h, got {value!r}")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds <= 0:
        raise TuningError(f"--timeout must be positive, got {value!r}")
    return seconds


def studies_dir() -> Path:
    """Default home of each study's trials table and plots (``<study>/``)."""
    from recboard.benchmarks.tracking.store import recboard_home
    return recboard_home() / "studies"


def default_storage() -> str:
    """The one sqlite file every study lives in unless ``--storage`` says otherwise."""
    from recboard.benchmarks.tracking.store import recboard_home
    return f"sqlite:///{(recboard_home() / 'optuna.db').resolve()}"


def _check_name(study: str) -> None:
    if not SAFE_NAME.fullmatch(study):
        raise TuningError(f"study name {study!r} becomes a file name: use letters, digits and . _ @ + - "
                          "(or pass --out-dir)")


def _sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def _open_storage(url: str):
    """An Optuna storage for ``url`` (an RDB URL with heartbeats; a sqlite file's schema is
    created under a lock)."""
    import optuna

    if url.startswith(("sqlite", "postgresql", "mysql", "oracle", "mssql")):
        import warnings
        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a heartbeat lets the next worker mark a crashed worker's RUNNING trial as FAIL
            def open_rdb():
                return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
            db = _sqlite_path(url)
            if db is None:
                return open_rdb()
            # workers starting together on a new sqlite file would race to create its schema
            from recboard.datasets.files import file_lock
            db.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(db.with_name(db.name + ".lock"), f"the study database {db}"):
                return open_rdb()
    return url


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def best_params(study_name: str, storage: str | None = None) -> dict:
    """Tuned parameters of the study's best complete trial (for ``bench run --from-study``).
    Keys fixed with ``--set`` while tuning are not included. Without ``storage``: the shared
    storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or default_storage()
    if not storage:
        if not _sqlite_path(url).exists():  # opening it would create an empty database
            raise TuningError(f"no study {study_name!r}: {_sqlite_path(url)} does not exist "
                              f"(pass --storage if the study lives elsewhere)")
    names = optuna.study.get_all_study_names(storage=url)
    if study_name not in names:
        raise TuningError(f"no study {study_name!r} in {_redact(url)}; studies there: {', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=study_name, storage=url)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise TuningError(f"study {study_name!r} has no complete trial yet ({len(study.trials)} trials in total)")
    return dict(study.best_trial.params)


# --------------------------------------------------------------------------- tune

def tune(model: str, dataset: str, trials: int, timeout=None, storage: str | None = None,
         study: str | None = None, space=None, sets=None, data_dir=None, cache_dir=None, seed: int = 0,
         out_dir=None, *, sampler: str = "tpe", pruner="median", data=None, tracking: bool = True,
         experiment: str | None = None):
    """Run (or resume) an Optuna study until it holds ``trials`` complete + pruned trials.

    ``space``: ``--space`` strings or a dict in ``SEARCH_SPACE`` form; ``sets``: fixed config
    (``--set`` strings or a dict); ``sampler`` / ``pruner``: a name from
    ``search_space.SAMPLERS`` / ``PRUNERS`` (a pruner may also be an Optuna pruner);
    ``storage``: an Optuna storage URL (default: the shared ``default_storage()``);
    ``out_dir``: the report folder; ``data``: an already loaded dataset; ``experiment``: the
    MLflow experiment (default: ``tracking.experiment_name``). Returns the ``optuna.Study``.
    """
    import optuna

    from recboard.benchmarks import config as C
    from recboard.benchmarks.training import runner
    from recboard.benchmarks.training.trainer import NonFiniteLossError
    from recboard.benchmarks.experiments.plots import plot_study
    from recboard.benchmarks.tracking.store import NullTracker, Tracker, find_run_id, run_tags

    if trials < 1:
        raise TuningError(f"--trials must be >= 1, got {trials}")
    timeout_s = parse_duration(timeout)
    base_cfg, fixed, search = resolve_search(model, dataset, space, sets)
    metric = base_cfg.train.metric
    study_name = study or f"{model}-{dataset}"
    if not out_dir:
        _check_name(study_name)
    pruner_obj = make_pruner(pruner, base_cfg.train.epochs)
    pruner_name = pruner if isinstance(pruner, str) else type(pruner_obj).__name__
    make_sampler(sampler, seed)  # a bad --sampler fails before anything is created
    url = storage or default_storage()
    out_dir = Path(out_dir) if out_dir else studies_dir() / study_name
    out_dir.mkdir(parents=True, exist_ok=True)

    study_obj = optuna.create_study(study_name=study_name, direction="maximize", load_if_exists=True,
                                    storage=_open_storage(url),
                                    pruner=pruner_obj)
    _check_resume(study_obj, model, dataset, metric, search, fixed)
    study_obj.sampler = make_sampler(sampler, seed, len(study_obj.trials))
    if data is None:
        from recboard.datasets.registry import load_dataset
        data = load_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir)

    def objective(trial):
        params = suggest(trial, search)
        try:
            cfg = C.resolve(model, dataset, {**fixed, **params})
        except ValueError as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise

        def on_epoch(epoch: int, valid: dict) -> None:
            trial.report(float(valid[metric]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: valid {metric} {valid[metric]:.4f}, "
                                         f"stopped by the {pruner_name} pruner")

        try:
            result = runner.run(cfg, data=data, on_epoch=on_epoch, tracking=tracking, nested=True,
                                run_name=f"{study_name} trial {trial.number}",
                                extra_tags={"recboard.kind": "trial", "recboard.study": study_name,
                                            "recboard.trial": str(trial.number)})
        except (ValueError, NonFiniteLossError) as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
            raise
        except optuna.TrialPruned:
            if tracking:  # the runner raised before returning the run id: look it up by its tags
                trial.set_user_attr("mlflow_run_id", find_run_id(
                    {"recboard.study": study_name, "recboard.trial": str(trial.number)}))
            raise
        trial.set_user_attr("mlflow_run_id", result.mlflow_run_id)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("train_time_s", round(result.train_time_s, 3))
        trial.set_user_attr("test", {k: float(v) for k, v in result.test_metrics.items()})
        return float(result.valid_metrics[metric])

    parent = NullTracker()
    if tracking:
        parent = Tracker(f"tune {study_name}", run_tags(
            kind="tune", model=model, dataset=dataset, task=_task(dataset), protocol=base_cfg.train.protocol,
            metric=metric, study=study_name), experiment=experiment)
    with runner.ending_status(parent):   # FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED with the error
        try:
            parent.log_params({"study": study_name, "storage": _redact(url)[:500], "trials": trials, "seed": seed,
                               "sampler": sampler, "pruner": pruner_name,
                               "timeout_s": timeout_s, "space": json.dumps(search),
                               "fixed": json.dumps(fixed, default=str)}, max_chars=5000)
            _optimize(study_obj, objective, trials, timeout_s)
        except BaseException:
            try:  # the table and plots of what ran, also after an interrupt; the interrupt wins
                _report(study_obj, search, metric, model, dataset, out_dir, plot_study, parent)
            except Exception as err:
                print(f"recboard: could not write the trials report: {err}", file=sys.stderr)
            raise
        _report(study_obj, search, metric, model, dataset, out_dir, plot_study, parent)
    return study_obj


def _task(dataset: str) -> str:
    from recboard.datasets.registry import dataset_spec
    return dataset_spec(dataset).task


def _check_resume(study, model: str, dataset: str, metric: str, search: dict, fixed: dict) -> None:
    """A study name is bound to one model, dataset and objective; the space may change. The
    objective is named ("valid NDCG@10"), also on studies made before names were set, so
    optuna-dashboard does not call it "Objective 0"."""
    import warnings

    import optuna

    attrs = study.user_attrs
    if not attrs:
        for key, value in (("model", model), ("dataset", dataset), ("metric", metric),
                           ("space", json.dumps(search)), ("fixed", json.dumps(fixed, default=str))):
            study.set_user_attr(key, value)
    for key, value in (("model", model), ("dataset", dataset), ("metric", metric)):
        if attrs and attrs.get(key) != value:
            raise TuningError(f"study {study.study_name!r} tunes {key} {attrs.get(key)!r}, not {value!r}; "
                              "use another --study name")
    if attrs and attrs.get("space") != json.dumps(search):
        print(f"recboard: study {study.study_name!r} resumes with a different search space "
              f"(was {attrs.get('space')})", file=sys.stderr)
        study.set_user_attr("space", json.dumps(search))
    if study.metric_names != [f"valid {metric}"]:
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([f"valid {metric}"])


class TrialsFailedError(RuntimeError):
    """The study could not go on (a failure of the work, not of how it was asked for)."""


class _SurplusTrial(RuntimeError):
    """Another worker already started the trial that reaches the target count."""


def _optimize(study, objective, trials: int, timeout_s: float | None) -> None:
    """One trial at a time until ``trials`` complete + pruned trials exist, the timeout
    passes, or too many trials fail in a row.

    Counted in the storage, so parallel workers (``--storage`` shared by several
    ``bench tune`` processes) share the target exactly: a worker starts no trial once
    finished + running trials reach it, and a trial created in the same instant as another
    worker's last one sees, by trial number, that it is surplus and ends at once as FAIL
    (user attr ``surplus``) without training.
    """
    import optuna

    S = optuna.trial.TrialState
    counted = (S.COMPLETE, S.PRUNED, S.RUNNING)

    mine: dict = {}

    def gated(trial):
        mine["number"] = trial.number
        ahead = [t for t in study.get_trials(deepcopy=False, states=counted) if t.number < trial.number]
        if len(ahead) >= trials:
            trial.set_user_attr("surplus", True)
            raise _SurplusTrial(f"trial {trial.number} not needed: {trials} trials already finished or running")
        return objective(trial)

    start, failures = time.monotonic(), 0
    while len(study.get_trials(deepcopy=False, states=counted)) < trials:
        if timeout_s is not None and time.monotonic() - start >= timeout_s:
            print(f"recboard: --timeout reached after {time.monotonic() - start:.0f} s", file=sys.stderr)
            return
        # KeyboardInterrupt inside a trial: Optuna stores the trial as FAIL, then re-raises
        study.optimize(gated, n_trials=1, catch=(ValueError, RuntimeError), gc_after_trial=False)
        if "number" not in mine:  # the trial never reached the objective (storage error)
            raise TrialsFailedError("Optuna could not start a trial; see the log above")
        last = study.get_trials(deepcopy=False)[mine.pop("number")]
        if last.user_attrs.get("surplus"):
            continue
        failures = failures + 1 if last.state == S.FAIL else 0
        if failures >= MAX_FAILURES_IN_ROW:
            raise TrialsFailedError(f"{failures} trials failed in a row; last error: "
                              f"{last.user_attrs.get('error', 'see the log above')}")


def trials_frame(study):
    """One row per trial: number, state, value, epochs run, best epoch, params, MLflow run."""
    import pandas as pd

    rows = []
    for t in study.trials:
        row = {"trial": t.number, "state": t.state.name, "value": t.value,
               "epochs": max(t.intermediate_values) if t.intermediate_values else None,
               "best_epoch": t.user_attrs.get("best_epoch"),
               "seconds": t.duration.total_seconds() if t.duration else None}
        row.update(t.params)
        row["mlflow_run"] = (t.user_attrs.get("mlflow_run_id") or "")[:8]
        rows.append(row)
    return pd.DataFrame(rows)


def _report(study, search: dict, metric: str, model: str, dataset: str, out_dir: Path, plot_study,
            parent) -> None:
    """Trials table (stdout + files) and plots, also logged to the ``parent`` tracker's run."""
    import optuna
    from tabulate import tabulate

    frame = trials_frame(study)
    if frame.empty:
        return
    shown = frame.astype(object).where(frame.notna(), None)  # blank, not "nan", for missing cells
    table = tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".4g", missingval="")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts = frame["state"].value_counts().to_dict()
    header = (f"Study {study.study_name}: {model} on {dataset}, valid {metric} (maximize); "
              + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    best = (f"Best: trial {study.best_trial.number}, valid {metric} {study.best_value:.4f}, "
            f"params {json.dumps(study.best_trial.params)}") if complete else "Best: no complete trial yet"
    print(f"{header}\n\n{table}\n\n{best}")
    (out_dir / TRIALS_TABLE).write_text(f"{header}\n\n{table}\n\n{best}\n")
    frame.to_csv(out_dir / "trials.csv", index=False)
    files = [out_dir / TRIALS_TABLE, out_dir / "trials.csv"]
    files += plot_study(study, list(search), metric, out_dir, title=f"{model} on {dataset}")
    if parent.active():
        if complete:
            parent.log_metrics({f"best_valid/{metric}": study.best_value,
                                "n_complete": counts.get("COMPLETE", 0), "n_pruned": counts.get("PRUNED", 0),
                                "n_failed": counts.get("FAIL", 0)})
        for path in files:
            parent.log_artifact(path)
