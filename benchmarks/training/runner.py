"""``run(cfg)``: train one model on one dataset, validate every epoch, stop early, test,
record in MLflow. It is what ``bench run`` calls, and ``bench tune`` once per trial.

The pieces, in the order a run uses them:

1. the dataset (prepared cache) and its route (``recboard.benchmarks.training.routes.route_for``):
   which catalog the model is built from, its training batches and its evaluators;
2. the model, ``Model(config, route.catalog())``, and its optimizer (``optimizers.make_optimizer``);
3. an MLflow run (``recboard.benchmarks.tracking.store``) that ends FINISHED, FAILED or KILLED;
4. the trainer (``recboard.benchmarks.training.trainer``) over a ``TrainState`` that checkpoints
   save and restore whole;
5. the best epoch's weights scored on the test split, and one ``RunResult``.
"""
from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from recboard.benchmarks import distributed as D
from recboard.benchmarks.config import RunConfig
from recboard.benchmarks.tracking.store import STILL_IMPROVING_TAG
from recboard.benchmarks.training.optimizers import make_optimizer
from recboard.benchmarks.training.routes import route_for
from recboard.benchmarks.training.trainer import Trainer, TrainState, improving_window, still_improving


@dataclass
class RunOptions:
    """How a run is carried out and recorded; what is trained is the ``RunConfig``."""
    tracking: bool = True                 # record in MLflow
    nested: bool = False                  # as a child of the active MLflow run (tuning trials)
    run_name: str | None = None
    extra_tags: dict = field(default_factory=dict)
    evaluate_test: bool = True
    progress: bool = False                # progress bar and one line per epoch on stderr
    checkpoint_dir: str | None = None     # write a checkpoint after every epoch here
    resume: bool = False                  # continue from the checkpoint in checkpoint_dir
    on_epoch: Callable | None = None      # on_epoch(epoch, valid_metrics); Optuna pruning hooks in here


@dataclass
class RunResult:
    model: str
    dataset: str
    protocol: str
    valid_metrics: dict
    test_metrics: dict
    best_epoch: int
    history: list
    wall_time_s: float
    train_time_s: float
    device: str
    n_params: int
    mlflow_run_id: str | None
    config: dict
    stats: dict
    still_improving: bool = False   # training ended while the validation metric was still rising

    def to_json(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, "protocol": self.protocol,
                "metrics": self.test_metrics, "valid_metrics": self.valid_metrics,
                "best_epoch": self.best_epoch, "mlflow_run_id": self.mlflow_run_id,
                "device": self.device, "wall_time_s": round(self.wall_time_s, 3),
                "train_time_s": round(self.train_time_s, 3), "n_params": self.n_params,
                "still_improving": self.still_improving, "history": self.history, "config": self.config,
                "dataset_stats": self.stats}


_said_cpu = False


def pick_device(name: str) -> torch.device:
    global _said_cpu
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if not _said_cpu:
            print("recboard: no CUDA device found, running on CPU", file=sys.stderr)
            _said_cpu = True
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA GPU is available "
                           "(use --set device=cpu or device=auto)")
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def ending_status(tracker):
    """End the MLflow run FINISHED, KILLED (pruned trial, Ctrl-C, SIGTERM, exit) or FAILED
    (with the error as a tag), and let the exception through."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except BaseException as exc:
        if type(exc).__name__ in ("TrialPruned", "KeyboardInterrupt") or isinstance(exc, SystemExit):
            status = "KILLED"
        else:
            tracker.set_tags({"recboard.error": f"{type(exc).__name__}: {exc}"[:4000]})
        raise
    finally:
        tracker.end(status)


def start_tracker(cfg: RunConfig, opts: RunOptions, data, model, device, resume_run_id: str | None):
    """The MLflow run (a no-op tracker when not tracking, or on torchrun ranks other than 0)."""
    from recboard.benchmarks.tracking import store as T
    from recboard.datasets.registry import dataset_spec

    if not (opts.tracking and D.is_main()):
        return T.NullTracker()
    tags = T.run_tags(kind="run", model=cfg.model_name, dataset=cfg.dataset_name,
                      task=dataset_spec(cfg.dataset_name).task, protocol=cfg.train.protocol,
                      metric=cfg.train.metric, device=device_name(device),
                      fingerprint=data.stats.get("fingerprint", "in-memory"), **data_tags(data))
    tags.update(variant_tag(model))
    tags.update(opts.extra_tags)
    params = {**cfg.flat(), **{f"model.{k}": v for k, v in model.describe().items()}}
    return T.Tracker(opts.run_name or f"{cfg.model_name}@{cfg.dataset_name}", tags, params,
                     nested=opts.nested, resume_run_id=resume_run_id)


def variant_tag(model) -> dict:
    """A model variant (e.g. a text item tower) is its own leaderboard row."""
    variant = model.describe().get("variant")
    return {"recboard.variant": str(variant)} if variant else {}


def data_tags(data) -> dict:
    """What the leaderboard keys tables by: the content identity of the prepared data and
    its size (``recboard.identity``, ``recboard.data_users`` / ``_items`` / ``_interactions``)."""
    return {"identity": data.identity(), **{f"data_{k}": v for k, v in data.shape().items()}}


def log_run_inputs(tracker, cfg: RunConfig, data, n_params: int) -> None:
    tracker.log_dict({"config": cfg.flat(), "sources": cfg.sources, "dataset_stats": data.stats}, "config.json")
    # facts about the inputs are params (and the dataset an mlflow.data input), not metrics
    tracker.log_dataset(cfg.dataset_name, data.stats, data.shape())
    tracker.log_params({"model.n_params": n_params})


def flag_still_improving(cfg: RunConfig, state: TrainState, tracker) -> bool:
    """Tag the run ``recboard.still_improving`` ("true" / "false") and, when it was still
    improving, say so on stderr: an under-trained number must never pass for the model's
    quality (the leaderboard marks such rows)."""
    improving = still_improving(state, cfg.train)
    tracker.set_tags({STILL_IMPROVING_TAG: str(improving).lower()})
    if improving and D.is_main():
        t = cfg.train
        limit = "epochs" if state.epoch >= t.epochs else "max_train_minutes"
        print(f"recboard: {cfg.model_name} on {cfg.dataset_name} was still improving when training stopped "
              f"(best epoch {state.best_epoch} of {state.epoch}, within the last {improving_window(t)}; "
              f"{limit}={getattr(t, limit)} ended it): its metrics understate the model; raise {limit}",
              file=sys.stderr)
    return improving


def test_and_save(route, cfg: RunConfig, data, model, device, amp_dtype, tracker) -> dict:
    """Test metrics of the model as it is (the best epoch's weights); a tracked run also
    saves the weights and every test example's metrics (``recboard.benchmarks.tracking.saved``).
    Under torchrun each rank holds only its share of the examples, so none are saved."""
    from recboard.benchmarks.tracking.saved import log_saved_run

    keep = tracker.run_id is not None and D.world_size() == 1
    evaluator = route.evaluator("test", cfg, device)
    test = evaluator.evaluate(model, amp_dtype, keep_examples=keep)
    tracker.log_metrics({f"test/{k}": v for k, v in test.items()})
    if tracker.run_id is not None:
        log_saved_run(tracker, model, cfg, data.identity(), evaluator.examples)
    return test


def run(cfg: RunConfig, data=None, *, data_dir=None, cache_dir=None, **options) -> RunResult:
    """Train ``cfg.model_name`` on ``cfg.dataset_name`` (or on ``data``, already loaded) and
    return its validation and test metrics. ``options`` are ``RunOptions`` fields. If
    ``on_epoch`` raises, the MLflow run ends KILLED (pruned / interrupted) or FAILED and the
    exception propagates."""
    from recboard.benchmarks.training.checkpoint import Checkpointer
    from recboard.datasets.registry import load_dataset
    from recboard.models.registry import model_class

    opts, wall_start = RunOptions(**options), time.perf_counter()
    seed_everything(cfg.train.seed)
    device = pick_device(D.init_from_env(cfg.train.device))
    if device.type == "cuda":  # TF32 for the float32 output layers over all items
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    data = data if data is not None else load_dataset(cfg.dataset_name, data_dir=data_dir, cache_dir=cache_dir)
    route = route_for(cfg.model_name, data)
    model = model_class(cfg.model_name)(cfg.model, route.catalog()).to(device)
    optimizer = make_optimizer(model, cfg, device)
    checkpointer = Checkpointer(opts.checkpoint_dir, cfg, write=D.is_main()) if opts.checkpoint_dir else None
    resumed = checkpointer.load(model, optimizer) if (checkpointer and opts.resume) else None
    state, resume_run_id = resumed or (TrainState(), None)
    tracker = start_tracker(cfg, opts, data, model, device, resume_run_id)
    if checkpointer:
        checkpointer.run_id = tracker.run_id
    n_params = sum(p.numel() for p in model.parameters())
    with ending_status(tracker):
        if not resumed:
            log_run_inputs(tracker, cfg, data, n_params)
        trains = optimizer is not None and cfg.train.epochs > 0
        trainer = Trainer(model, optimizer, route.training_batches(cfg, device) if trains else None,
                          route.evaluator("valid", cfg, device), cfg, device, tracker=tracker,
                          checkpointer=checkpointer, on_epoch=opts.on_epoch, progress=opts.progress)
        state = trainer.fit(state)
        valid = trainer.best_validation(state)
        improving = flag_still_improving(cfg, state, tracker)
        tracker.log_metrics({**{f"best_valid/{k}": v for k, v in valid.items()}, "best_epoch": state.best_epoch})
        amp_dtype = trainer.amp_dtype
        del trainer  # frees the validation inputs before the test split's are built
        test = test_and_save(route, cfg, data, model, device, amp_dtype, tracker) if opts.evaluate_test else {}
        wall_time_s = time.perf_counter() - wall_start
        tracker.log_metrics({"wall_time_s": wall_time_s, "train_time_s": state.train_time_s})
    return RunResult(cfg.model_name, cfg.dataset_name, cfg.train.protocol, valid, test, state.best_epoch,
                     state.history, wall_time_s, state.train_time_s, device_name(device), n_params,
                     tracker.run_id, cfg.flat(), {k: v for k, v in data.stats.items() if k != "cache_path"},
                     improving)
