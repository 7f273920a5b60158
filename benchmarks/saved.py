"""Saved runs: what every tracked run leaves in MLflow besides its numbers, and what reads it
back (``bench eval``, ``bench compare``, the leaderboard's significance marks).

Artifacts of a finished run:

* ``model/weights.safetensors``: the best epoch's weights (the ones that were tested), as
  safetensors, so loading them runs no pickled code;
* ``model/config.json``: model and dataset names, the resolved flat config and the data
  identity the weights were trained on;
* ``test_examples.npz``: every test user's (sequences) or impression's (MIND) metrics, by
  row id, for paired tests on the same test users.

``evaluate_saved`` rebuilds a model from those files and scores the test split under any
protocol, as a new MLflow run (kind ``eval``) linked to its source by ``recboard.source_run``.
Selection still happened on the source run's validation split, so the eval run carries the
source's ``best_valid/*`` metrics.
"""
from __future__ import annotations

import json
import tempfile
import time
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
    from recboard.benchmarks.tracking import artifact

    with artifact(run_id, EXAMPLES, store) as path:
        if path is None:
            return None
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}


def saved_model(run_id: str, store: str | None = None) -> tuple[dict, dict]:
    """(config.json of the run's saved model, its state dict); a one-line error when the run
    does not exist or saved no model."""
    from safetensors.torch import load_file

    from recboard.benchmarks.tracking import artifact, get_run

    get_run(run_id, store)
    with artifact(run_id, MODEL_DIR, store) as folder:
        if folder is None or not (folder / WEIGHTS).exists():
            raise SavedRunError(f"run {run_id} has no saved model (artifact {MODEL_DIR}/{WEIGHTS}); it was made "
                                "before models were saved, with save_model=false, or did not finish")
        return _read_artifact(run_id, CONFIG, lambda: json.loads((folder / CONFIG).read_text())), \
            _read_artifact(run_id, WEIGHTS, lambda: load_file(str(folder / WEIGHTS)))


def _read_artifact(run_id: str, name: str, read):
    """``read()``, with a damaged file (truncated, edited, half-copied) reported in one line
    that names the artifact and the run instead of the reader's traceback."""
    from safetensors import SafetensorError

    try:
        return read()
    except (SafetensorError, ValueError, OSError) as err:
        raise SavedRunError(f"run {run_id}: artifact {MODEL_DIR}/{name} is damaged and cannot be read "
                            f"({type(err).__name__}: {err}); re-run the source run to save it again") from None


def evaluate_saved(run_id: str, sets=None, *, data=None, data_dir=None, cache_dir=None,
                   store: str | None = None, tracking: bool = True):
    """Score the saved best weights of ``run_id`` on the test split, with ``sets`` (e.g.
    ``protocol=sampled-pop100``) applied over the saved config. Returns a ``RunResult``."""
    import torch

    from recboard.benchmarks import config as C
    from recboard.benchmarks import runner
    from recboard.benchmarks.tasks import route_for
    from recboard.datasets.registry import load_dataset
    from recboard.models.registry import model_class

    saved, weights = saved_model(run_id, store)
    source = _source_summary(run_id, store)
    cfg = C.resolve(saved["model"], saved["dataset"], {**saved["config"], **_parse(sets)})
    start = time.perf_counter()
    runner.seed_everything(cfg.train.seed)
    device = runner.pick_device(cfg.train.device)
    data = data if data is not None else load_dataset(cfg.dataset_name, data_dir=data_dir, cache_dir=cache_dir)
    if data.identity() != saved["identity"]:
        raise SavedRunError(f"run {run_id} was trained on {cfg.dataset_name} data {saved['identity']}, but the "
                            f"dataset loaded here is {data.identity()}; point --data-dir at the same files")
    route = route_for(cfg.model_name, data)
    model = model_class(cfg.model_name)(cfg.model, route.catalog())
    model.load_state_dict(weights)
    model.to(device)
    amp_dtype = torch.bfloat16 if (cfg.train.amp and device.type == "cuda") else None
    evaluator = route.evaluator("test", cfg, device)
    test = evaluator.evaluate(model, amp_dtype, keep_examples=tracking)
    return _record_eval(run_id, source, cfg, data, model, test, evaluator.examples, device,
                        time.perf_counter() - start, tracking)


def _parse(sets) -> dict:
    from recboard.benchmarks.config import parse_sets
    return parse_sets(sets) if isinstance(sets, (list, tuple)) else dict(sets or {})


def _source_summary(run_id: str, store: str | None) -> dict:
    """The source run's selection metrics and training time, carried over to the eval run."""
    from recboard.benchmarks.tracking import get_run, metric_label

    metrics = get_run(run_id, store).data.metrics
    valid = {metric_label(k[len("best_valid/"):]): v for k, v in metrics.items() if k.startswith("best_valid/")}
    return {"valid": valid, "best_epoch": int(metrics.get("best_epoch", 0)),
            "train_time_s": float(metrics.get("train_time_s", 0.0))}


def _record_eval(run_id, source, cfg, data, model, test, examples, device, wall_time_s, tracking):
    from recboard.benchmarks import runner
    from recboard.benchmarks import tracking as T
    from recboard.datasets.registry import dataset_spec

    n_params = sum(p.numel() for p in model.parameters())
    tracker = T.NullTracker()
    if tracking:
        tags = T.run_tags(kind="eval", model=cfg.model_name, dataset=cfg.dataset_name,
                          task=dataset_spec(cfg.dataset_name).task, protocol=cfg.train.protocol,
                          metric=cfg.train.metric, device=runner.device_name(device), source_run=run_id,
                          fingerprint=data.stats.get("fingerprint", "in-memory"), **runner.data_tags(data))
        tags.update(runner.variant_tag(model))
        tracker = T.Tracker(f"eval {cfg.model_name}@{cfg.dataset_name} ({cfg.train.protocol})", tags,
                            {**cfg.flat(), "model.n_params": n_params})
    with runner.ending_status(tracker):
        tracker.log_metrics({**{f"best_valid/{k}": v for k, v in source["valid"].items()},
                             **{f"test/{k}": v for k, v in test.items()}, "best_epoch": source["best_epoch"],
                             "train_time_s": source["train_time_s"], "wall_time_s": wall_time_s})
        if examples is not None:
            cfg.train.save_model = False   # the weights stay with the source run
            log_saved_run(tracker, model, cfg, data.identity(), examples)
    return runner.RunResult(cfg.model_name, cfg.dataset_name, cfg.train.protocol, source["valid"], test,
                            source["best_epoch"], [], wall_time_s, source["train_time_s"],
                            runner.device_name(device), n_params, tracker.run_id, cfg.flat(),
                            {k: v for k, v in data.stats.items() if k != "cache_path"})
