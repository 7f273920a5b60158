"""MLflow tracking: where runs go and what each run records.

Default store: a sqlite file ``~/recboard/mlflow.db`` (``RECBOARD_HOME`` moves the folder)
with artifacts beside it; ``MLFLOW_TRACKING_URI`` (a file, sqlite or http tracking server)
always wins. Open the UI with ``mlflow ui --backend-store-uri sqlite:///$HOME/recboard/mlflow.db``.
Experiment: ``--experiment``, else MLflow's own ``MLFLOW_EXPERIMENT_NAME``, else
``RECBOARD_EXPERIMENT``, else "recboard"; nested runs (tuning trials) go where their parent is.

Run schema (read back by ``bench leaderboard`` and ``bench tune``):
tags ``recboard.{model,dataset,task,protocol,metric,device,git_commit,kind,fingerprint}``
built by ``run_tags`` (tuning adds ``recboard.study`` and, on trials, ``recboard.trial``);
params = the flat run config, ``model.<fact>`` (``model.n_params`` and the model's
``describe()``) and ``data.<stat>`` (the dataset statistics); one ``mlflow.data`` input per
run, context "training", named after the dataset, its digest the prepared data's content
identity, its profile the statistics (``log_dataset``); metrics ``train/loss`` and
``valid/<M>`` per epoch (step = epoch), ``best_valid/<M>``, ``test/<M>`` (with '@' written
'_at_', e.g. ``test/NDCG_at_10``: MLflow forbids '@'), ``wall_time_s``, ``train_time_s``,
``best_epoch``, and MLflow's ``system/*`` when psutil is installed; artifact ``config.json``.
Every trained run, and a seed group's parent, is tagged ``recboard.still_improving`` "true"
or "false" (``STILL_IMPROVING_TAG``; the rule is ``training.trainer.still_improving``; a
parent is "true" when any of its seeds was; an eval run carries its source run's tag).
Statistics are params, not metrics: they describe the inputs, they are not measured.

Every MLflow call of recboard goes through this module (runs: ``Tracker``; queries:
``search_runs`` / ``find_run_id``), so the store, experiment and schema live in one place.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import contextlib
import os
import subprocess
from pathlib import Path

EXPERIMENT = "recboard"
# "true" on a run whose training ended while its validation metric was still rising
STILL_IMPROVING_TAG = "recboard.still_improving"


def recboard_home() -> Path:
    return Path(os.environ.get("RECBOARD_HOME", Path.home() / "recboard"))


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(recboard_home() / 'mlflow.db').resolve()}"


def experiment_name(explicit: str | None = None) -> str:
    """``explicit`` (``--experiment``), else MLflow's own ``MLFLOW_EXPERIMENT_NAME``, else "recboard"."""
    return explicit or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def system_metrics() -> bool | None:
    """``log_system_metrics`` for ``start_run``: MLflow's own switch
    (``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``) when set (None lets MLflow read it), else on
    exactly when psutil, which MLflow samples with, is installed. The sampler is a thread
    that wakes every 10 s and stops at once when the run ends, so short runs pay nothing."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING") is not None:
        return None
    return importlib.util.find_spec("psutil") is not None


def quiet_mlflow():
    """The mlflow module, with its and alembic's INFO lines (schema migrations of a new
    store) kept out of the commands' output."""
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return mlflow


def setup(experiment: str | None = None):
    """Point MLflow at our store and experiment (``experiment_name``); returns the mlflow
    module."""
    mlflow = quiet_mlflow()
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = experiment_name(experiment)
    if mlflow.get_experiment_by_name(name) is None:
        artifact_location = None
        if uri.startswith("sqlite:///"):
            artifact_location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
        try:
            mlflow.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # another process created it first
            if mlflow.get_experiment_by_name(name) is None:
                raise
    mlflow.set_experiment(name)
    return mlflow


def git_commit() -> str:
    """Commit of the recboard checkout (with "-dirty" when it has local changes), or "unknown".
    ``RECBOARD_GIT_COMMIT`` overrides it for copies of the tree without ``.git`` (GPU boxes)."""
    if os.environ.get("RECBOARD_GIT_COMMIT"):
        return os.environ["RECBOARD_GIT_COMMIT"]
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(*, kind: str, model: str, dataset: str, task: str, protocol: str, metric: str,
             **extra) -> dict[str, str]:
    """The ``recboard.*`` tags of a run (the schema above): one builder for ``bench run``,
    tuning parents and trials. ``extra`` adds ``recboard.<key>`` tags (device, fingerprint,
    study, trial, ...)."""
    return {"recboard.kind": kind, "recboard.model": model, "recboard.dataset": dataset,
            "recboard.task": task, "recboard.protocol": protocol, "recboard.metric": metric,
            "recboard.git_commit": git_commit(), **{f"recboard.{k}": str(v) for k, v in extra.items()}}


def tag_filter(tags: dict, status: str | None = None) -> str:
    """MLflow filter string for runs carrying every tag in ``tags`` (and, if given, that
    status). MLflow's filter grammar has no escape for quotes, so a key or value holding one
    is refused with ValueError rather than spliced into the query."""
    pairs = ([] if status is None else [("status", status)]) + list(tags.items())
    for key, value in pairs:
        if any(q in f"{key}{value}" for q in "'\"`"):
            raise ValueError(f"cannot search MLflow for {key} = {value!r}: it holds a quote")
    clauses = [] if status is None else [f"attributes.status = '{status}'"]
    return " and ".join(clauses + [f"tags.`{key}` = '{value}'" for key, value in tags.items()])


def search_runs(filter_string: str, tracking_uri: str | None = None, **kwargs):
    """``mlflow.search_runs`` over every experiment of the store at ``tracking_uri``
    (default: the current one), leaving MLflow's global tracking URI as it was."""
    mlflow = quiet_mlflow()
    previous = mlflow.get_tracking_uri()
    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.search_runs(search_all_experiments=True, filter_string=filter_string, **kwargs)
    finally:
        mlflow.set_tracking_uri(previous)


def find_run_id(tags: dict) -> str | None:
    """Id of the newest run carrying every tag in ``tags`` (e.g. a trial that ended by an
    exception, so its id never came back), or None (also when a value cannot be searched)."""
    try:
        query = tag_filter(tags)
    except ValueError:
        return None
    runs = search_runs(query, max_results=1, output_format="list", order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def metric_key(name: str) -> str:
    """MLflow forbids '@' in metric names: ``test/NDCG@10`` is stored as ``test/NDCG_at_10``."""
    return name.replace("@", "_at_")


def metric_label(key: str) -> str:
    """Inverse of ``metric_key``."""
    return key.replace("_at_", "@")


def logged_params(params: dict, max_chars: int = 500) -> dict[str, str]:
    """``params`` as a run records them: strings cut to ``max_chars`` (MLflow caps values at
    6000). What a recorded run's params are compared with (``bench sweep`` reusing a point)."""
    return {k: str(v)[:max_chars] for k, v in params.items()}


def dataset_facts(stats: dict) -> dict:
    """The statistics worth recording with a run: scalars, without the machine-local cache
    path."""
    return {k: v for k, v in stats.items() if k != "cache_path" and isinstance(v, (str, int, float, bool))}


def dataset_input(name: str, stats: dict, shape: dict):
    """An ``mlflow.data`` dataset standing for prepared data without uploading it: named
    after the dataset, its digest the content identity (``stats["identity"]``; the
    fingerprint of the source files and options where there is none), its profile the
    users / items / interactions and the statistics, its source the recboard code that
    prepared it and where the prepared arrays live."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    facts = dataset_facts(stats)
    fingerprint = str(facts.get("fingerprint", "in-memory"))
    digest = str(facts.get("identity") or fingerprint)[:16]
    source = CodeDatasetSource({"recboard.dataset": name, "recboard.fingerprint": fingerprint,
                                "cache_path": str(stats.get("cache_path", "in memory"))})
    return _profiled_dataset()(source, name, digest, {**shape, **facts})


@functools.cache
def _profiled_dataset():
    """``MetaDataset`` records no profile; this subclass adds one (built on first use, so
    importing this module does not import MLflow)."""
    from mlflow.data.meta_dataset import MetaDataset

    class ProfiledDataset(MetaDataset):
        def __init__(self, source, name: str, digest: str, profile: dict):
            self._profile = profile
            super().__init__(source, name=name, digest=digest)

        @property
        def profile(self) -> dict:
            return self._profile

        def to_dict(self) -> dict:
            return {**super().to_dict(), "profile": json.dumps(self._profile, default=str)}

    return ProfiledDataset


class Tracker:
    """One MLflow run. ``end(status)`` with FINISHED / FAILED / KILLED. A nested run opens in
    its parent's experiment and samples no system metrics (the parent's sampler covers it)."""

    def __init__(self, run_name: str, tags: dict, params: dict | None = None, nested: bool = False,
                 resume_run_id: str | None = None, experiment: str | None = None):
        self.mlflow = setup(experiment)
        parent = self.mlflow.active_run() if nested else None
        self.run = self.mlflow.start_run(run_id=resume_run_id, run_name=None if resume_run_id else run_name,
                                         nested=nested, tags=None if resume_run_id else tags,
                                         experiment_id=parent.info.experiment_id if parent else None,
                                         log_system_metrics=False if nested else system_metrics())
        self.run_id = self.run.info.run_id
        if params and not resume_run_id:  # MLflow rejects re-logging a param with a changed value
            try:
                self.log_params(params)
            except BaseException:   # the run was started: never leave it RUNNING
                self.end("FAILED")
                raise

    def log_params(self, params: dict, max_chars: int = 500) -> None:
        """Log ``params`` as strings cut to ``max_chars`` (``logged_params``)."""
        self.mlflow.log_params(logged_params(params, max_chars))

    def log_metrics(self, values: dict, step: int | None = None) -> None:
        self.mlflow.log_metrics({metric_key(k): float(v) for k, v in values.items()}, step=step)

    def set_tags(self, tags: dict) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, obj: dict, name: str) -> None:
        self.mlflow.log_dict(obj, name)

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dataset(self, name: str, stats: dict, shape: dict) -> None:
        """The training data: its statistics as ``data.<stat>`` params and an ``mlflow.data``
        input (``dataset_input``), which MLflow's UI lists in the runs table's Datasets column."""
        self.log_params({f"data.{k}": v for k, v in dataset_facts(stats).items()})
        self.mlflow.log_input(dataset_input(name, stats, shape), context="training")

    def active(self) -> bool:
        """Whether this run is MLflow's active run, so the logging calls above reach it (not
        a nested run left open, nor nothing after ``end``)."""
        run = self.mlflow.active_run()
        return run is not None and run.info.run_id == self.run_id

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


class NullTracker:
    """A Tracker that records nothing (``tracking=False``)."""
    run_id = None

    def __init__(self, *args, **kwargs):
        pass

    def log_metrics(self, *args, **kwargs):
        pass

    log_params = set_tags = log_dict = log_artifact = log_dataset = log_metrics

    def active(self) -> bool:
        return False

    def end(self, status="FINISHED"):
        pass


# --------------------------------------------------------------------------- saved runs
# What ``bench eval``, ``bench compare`` and the leaderboard's significance marks read back.

def get_run(run_id: str, store: str | None = None):
    """The MLflow run ``run_id`` in ``store`` (a tracking URI; default: the current one); a
    one-line error naming the store when it is not there."""
    mlflow = quiet_mlflow()
    from mlflow.exceptions import MlflowException

    uri = store or tracking_uri()
    try:
        return mlflow.MlflowClient(uri).get_run(run_id)
    except MlflowException:
        raise ValueError(f"no MLflow run {run_id!r} in {uri}") from None


@contextlib.contextmanager
def artifact(run_id: str, name: str, store: str | None = None):
    """A local copy of the run's artifact ``name`` (a file or folder), or None if it has
    none, for the duration of the ``with`` block; the copy is deleted afterwards."""
    import tempfile

    from mlflow.exceptions import MlflowException

    client = quiet_mlflow().MlflowClient(store or tracking_uri())
    # a progress bar per artifact would bury the command's own output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="recboard-artifact-") as folder:
        try:
            path = Path(client.download_artifacts(run_id, name, folder))
        except (MlflowException, OSError):
            path = None
        yield path
