"""Saved runs: what every tracked run leaves in MLflow besides its numbers, and what reads it
back (``bench eval``, ``bench compare``, the leaderboard's significance marks).

Artifacts of a finished run:

* ``model/weights.safetensors``: the best epoch's weights (the ones that were tested), as
  safetensors, so loading them runs no pickled code;
* ``model/config.json``: model and dataset names, the resolved flat config and the data
  identity the weights were trained on;
* ``test_examples.npz``: every test user's (sequences) or impression's (MIND) metrics, by
  row id, for paired tests on the same test users.

``recboard.benchmarks.experiments.rescore`` (``bench eval``) rebuilds a model from them; the
significance tests and the records read the per-example outcomes.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

MODEL_DIR = "model"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
EXAMPLES = "test_examples.npz"


class SavedRunError(ValueError):
    pass


def log_saved_run(tracker, model, cfg, identity: str, examples: dict | None) -> None:
    """Log the model (unless ``save_model=false``) and the per-example test metrics."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(prefix="recboard-save-") as tmp:
        folder = Path(tmp) / MODEL_DIR
        folder.mkdir()
        if cfg.train.save_model:
            # cloned to plain contiguous CPU tensors: safetensors refuses shared or strided storage
            state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
            save_file(state, str(folder / WEIGHTS))
            (folder / CONFIG).write_text(json.dumps({"model": cfg.model_name, "dataset": cfg.dataset_name,
                                                     "config": cfg.flat(), "sources": cfg.sources,
                                                     "identity": identity}, indent=1, default=str))
            tracker.log_artifact(folder / WEIGHTS, MODEL_DIR)
            tracker.log_artifact(folder / CONFIG, MODEL_DIR)
        if examples is not None:
            np.savez(Path(tmp) / EXAMPLES, **examples)
            tracker.log_artifact(Path(tmp) / EXAMPLES)


def load_examples(run_id: str, store: str | None = None) -> dict | None:
    """The run's per-example test metrics ({"row": ..., metric: ...}), or None."""
    from recboard.benchmarks.tracking.store import artifact

    with artifact(run_id, EXAMPLES, store) as path:
        if path is None:
            return None
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}


def saved_model(run_id: str, store: str | None = None) -> tuple[dict, dict]:
    """(config.json of the run's saved model, its state dict); a one-line error when the run
    does not exist or saved no model."""
    return _saved(run_id, store, with_weights=True)


def saved_config(run_id: str, store: str | None = None) -> dict:
    """config.json of the run's saved model, its weights checked for but not read."""
    return _saved(run_id, store, with_weights=False)[0]


def _saved(run_id: str, store: str | None, with_weights: bool) -> tuple[dict, dict | None]:
    from safetensors.torch import load_file

    from recboard.benchmarks.tracking.store import artifact, get_run

    get_run(run_id, store)
    with artifact(run_id, MODEL_DIR, store) as folder:
        if folder is None or not (folder / WEIGHTS).exists():
            raise SavedRunError(f"run {run_id} has no saved model (artifact {MODEL_DIR}/{WEIGHTS}); it was made "
                                "before models were saved, with save_model=false, or did not finish")
        config = _read_artifact(run_id, CONFIG, lambda: json.loads((folder / CONFIG).read_text()))
        if not with_weights:
            return config, None
        return config, _read_artifact(run_id, WEIGHTS, lambda: load_file(str(folder / WEIGHTS)))


def _read_artifact(run_id: str, name: str, read):
    """``read()``, with a damaged file (truncated, edited, half-copied) reported in one line
    that names the artifact and the run instead of the reader's traceback."""
    from safetensors import SafetensorError

    try:
        return read()
    except (SafetensorError, ValueError, OSError) as err:
        raise SavedRunError(f"run {run_id}: artifact {MODEL_DIR}/{name} is damaged and cannot be read "
                            f"({type(err).__name__}: {err}); re-run the source run to save it again") from None
