"""Fixtures shared by several test modules. Nothing here is autouse: a module asks for what
it needs (``pytestmark = pytest.mark.usefixtures("one_thread")``, or a fixture argument)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# plain-assert helpers of the sequence-model tests: report failures with values, like tests
pytest.register_assert_rewrite("sequence_helpers")


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second intra-op thread, and on a busy 2-core machine
    a 2-thread pool stalls on every op (measured: 10 ms vs 850 ms per step)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _fresh_store(folder: Path) -> str:
    import mlflow

    template = Path(tempfile.gettempdir()) / f"recboard-test-mlflow-{mlflow.__version__}.db"
    if not template.exists():
        scratch = template.with_suffix(f".{os.getpid()}.tmp")
        mlflow.MlflowClient(f"sqlite:///{scratch}").search_experiments()  # creates the schema
        os.replace(scratch, template)
    shutil.copy(template, Path(folder) / "mlflow.db")
    return f"sqlite:///{Path(folder) / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def no_committed_records(tmp_path_factory, monkeypatch):
    """Tests read the records they make, not the repository's: the leaderboard's default
    records folder is an empty one (test_records checks the committed ones by path)."""
    from recboard.leaderboard import runs
    monkeypatch.setattr(runs, "RECORDS_DIR", tmp_path_factory.mktemp("no-records"))


@pytest.fixture(scope="session")
def fresh_store():
    """``fresh_store(folder)`` -> a sqlite tracking URI on an empty MLflow database in
    ``folder``. Creating one runs MLflow's schema migrations (~7 s), so a migrated empty
    database is made once per MLflow version and copied."""
    pytest.importorskip("mlflow")
    return _fresh_store


@pytest.fixture
def store(tmp_path, fresh_store, monkeypatch):
    """An MlflowClient on a fresh store that ``bench`` and the API log to (through the
    environment), with the dataset cache in ``tmp_path``. Modules that need another shape
    of store define their own ``store``."""
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("torch")
    uri = fresh_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"):
        monkeypatch.delenv(name, raising=False)
    previous = mlflow.get_tracking_uri()
    yield mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def data():
    """60 short synthetic sequences over 40 items: enough for a run of a few seconds."""
    from recboard.datasets.synthetic import generate_sequences
    return generate_sequences(n_users=60, n_items=40, min_len=6, max_len=12)
