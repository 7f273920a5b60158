"""MLflow tracking: where runs go and what each run records.

Default store: a sqlite file ``~/recboard/mlflow.db`` (``RECBOARD_HOME`` moves the folder)
with artifacts beside it; ``MLFLOW_TRACKING_URI`` (a file, sqlite or http tracking server)
always wins. Open the UI with ``mlflow ui --backend-store-uri sqlite:///$HOME/recboard/mlflow.db``.

Run schema (read back by ``bench leaderboard`` and ``bench tune``):
tags ``recboard.{model,dataset,task,protocol,metric,device,git_commit,kind,fingerprint}``;
params = the flat run config; metrics ``train/loss`` and ``valid/<M>`` per epoch (step =
epoch), ``best_valid/<M>``, ``test/<M>`` (with '@' written '_at_', e.g.
``test/NDCG_at_10``: MLflow forbids '@'), ``wall_time_s``, ``train_time_s``, ``n_params``,
``best_epoch``; artifact ``config.json``.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

EXPERIMENT = "recboard"


def recboard_home() -> Path:
    return Path(os.environ.get("RECBOARD_HOME", Path.home() / "recboard"))


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(recboard_home() / 'mlflow.db').resolve()}"


def setup(experiment: str | None = None):
    """Point MLflow at our store and experiment; returns the mlflow module."""
    import logging
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = experiment or os.environ.get("RECBOARD_EXPERIMENT", EXPERIMENT)
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


def metric_key(name: str) -> str:
    """MLflow forbids '@' in metric names: ``test/NDCG@10`` is stored as ``test/NDCG_at_10``."""
    return name.replace("@", "_at_")


def metric_label(key: str) -> str:
    """Inverse of ``metric_key``."""
    return key.replace("_at_", "@")


class Tracker:
    """One MLflow run. ``end(status)`` with FINISHED / FAILED / KILLED."""

    def __init__(self, run_name: str, tags: dict, params: dict, nested: bool = False,
                 resume_run_id: str | None = None):
        self.mlflow = setup()
        self.run = self.mlflow.start_run(run_id=resume_run_id, run_name=None if resume_run_id else run_name,
                                         nested=nested, tags=None if resume_run_id else tags)
        self.run_id = self.run.info.run_id
        if not resume_run_id:
            # MLflow caps param values at 6000 chars and rejects re-logging a changed value
            self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, values: dict, step: int | None = None) -> None:
        self.mlflow.log_metrics({metric_key(k): float(v) for k, v in values.items()}, step=step)

    def set_tags(self, tags: dict) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, obj: dict, name: str) -> None:
        self.mlflow.log_dict(obj, name)

    def log_artifact(self, path) -> None:
        self.mlflow.log_artifact(str(path))

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


class NullTracker:
    run_id = None

    def __init__(self, *args, **kwargs):
        pass

    def log_metrics(self, values, step=None):
        pass

    set_tags = log_dict = log_artifact = log_metrics

    def end(self, status="FINISHED"):
        pass
