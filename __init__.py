"""recboard: benchmarks for sequential and news recommenders, from Python.

    import recboard
    result = recboard.run("sasrec", "ml-1m", epochs=50, lr=1e-3)   # -> RunResult
    print(result.test_metrics["NDCG@10"], result.mlflow_run_id)
    print(recboard.leaderboard())                                   # markdown tables
    best = recboard.leaderboard("dataframe")                        # or a pandas DataFrame

``import recboard`` stays light (no torch, MLflow or Optuna until a function needs them), so
it costs nothing in a script that only reads ``recboard.__version__``.
"""
from __future__ import annotations

import contextlib
import os
import types

from recboard import leaderboard as _leaderboard_package


def _version() -> str:
    """The installed distribution's version; in a source tree that is not installed,
    pyproject.toml's (read with a regex: tomllib is not there on Python 3.10)."""
    from importlib import metadata

    try:
        return metadata.version("recboard")
    except metadata.PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).with_name("pyproject.toml")
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE) \
            if pyproject.exists() else None
        return found.group(1) if found else "0+unknown"


__version__ = _version()
__all__ = ["__version__", "run", "leaderboard"]


@contextlib.contextmanager
def _experiment(name: str | None):
    """Runs started inside go to MLflow experiment ``name`` (None: as configured), through
    MLflow's own ``MLFLOW_EXPERIMENT_NAME``, restored afterwards."""
    if not name:
        yield
        return
    previous = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    os.environ["MLFLOW_EXPERIMENT_NAME"] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_NAME"] = previous


def run(model: str, dataset: str, *, preset: str = "default", data=None, data_dir=None, cache_dir=None,
        tracking: bool = True, experiment: str | None = None, progress: bool = False, **overrides):
    """Train ``model`` on ``dataset`` as ``bench run`` does and return its ``RunResult``
    (``valid_metrics``, ``test_metrics``, ``mlflow_run_id``, ``to_json()``, ...).

    ``overrides`` are config keys (``epochs=5, lr=3e-4``; ``bench config`` lists them), over
    the paper presets and the named ``preset``; ``data``: a dataset already loaded (else it
    is read from the cache, ``data_dir`` or ``cache_dir``); ``tracking=False`` records
    nothing in MLflow; ``experiment``: the MLflow experiment for this run.
    """
    from recboard.benchmarks import config
    from recboard.benchmarks.training.runner import run as run_config

    cfg = config.resolve(model, dataset, overrides, preset=preset)
    with _experiment(experiment):
        return run_config(cfg, data=data, data_dir=data_dir, cache_dir=cache_dir, tracking=tracking,
                          progress=progress)


def _leaderboard(fmt: str = "markdown", *, tracking_uri=None, datasets=None, references=None,
                 records="committed", **options):
    """The leaderboard of the committed records (``records``: a folder, None for none; default
    ``leaderboard/records/``) and the runs in the MLflow store (``tracking_uri``: one or a
    list; default as ``bench run``): the text of ``bench leaderboard`` (``fmt`` "markdown",
    "csv" or "json"), or with ``fmt="dataframe"`` the best run per table and model as a
    pandas DataFrame. ``datasets`` keeps only those; ``options`` go to
    ``recboard.leaderboard.render.build`` (``models``, ``commit``, ``date``)."""
    from recboard.leaderboard import render

    if fmt == "dataframe":
        frame = render.collect(tracking_uri, records=records)
        return frame[frame["dataset"].isin(list(datasets))].reset_index(drop=True) if datasets else frame
    return render.build(fmt=fmt, tracking_uri=tracking_uri, references=references, datasets=datasets,
                        records=records, **options)


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return _leaderboard(*args, **kwargs)

    __call__.__doc__ = _leaderboard.__doc__


# ``recboard.leaderboard`` is a subpackage, and importing a submodule rebinds the parent's
# attribute to the package, so a function of that name would vanish at the first
# ``import recboard.leaderboard.render``. The package itself is made callable instead:
# ``recboard.leaderboard(...)`` and ``import recboard.leaderboard.render`` both keep working.
_leaderboard_package.__class__ = _CallableModule
leaderboard = _leaderboard_package
