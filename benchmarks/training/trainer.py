"""The epoch loop: train, validate, keep the best weights, stop early, checkpoint.

Everything the next epoch depends on, apart from the model and optimizer, lives in one
``TrainState`` record: the checkpoint saves it whole and a resumed run starts from it. The
loop is deliberately plain (nanoGPT-style): training batches come from the run's route
(already on the device), bf16 autocast on CUDA, validation after every epoch on the device.
``compile`` (a config key) runs the loss through ``torch.compile``, see ``training_loss``.
"""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from recboard.benchmarks import distributed as D
from recboard.benchmarks.config import ConfigError
from recboard.benchmarks.evaluation.evaluators import autocast


def autocast_dtype(train, device) -> "torch.dtype | None":
    """bf16 autocast on CUDA when ``amp`` is on; None (full precision) elsewhere."""
    return torch.bfloat16 if (train.amp and device.type == "cuda") else None


class NonFiniteLossError(RuntimeError):
    pass


def clip_gradients(model: torch.nn.Module, max_norm: float) -> None:
    """``clip_grad_norm_`` over all gradients, sparse ones (sparse embedding tables) included,
    which torch's own cannot take: a sparse gradient counts with its coalesced values."""
    grads = [p for p in model.parameters() if p.grad is not None]
    if not any(p.grad.is_sparse for p in grads):
        torch.nn.utils.clip_grad_norm_(grads, max_norm)
        return
    for p in grads:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()   # repeated rows summed, so the values' norm is the gradient's
    values = [p.grad._values() if p.grad.is_sparse else p.grad for p in grads]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in values]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for v in values:
        v.mul_(scale)


@dataclass
class TrainState:
    epoch: int = 0                    # epochs finished
    best_metric: float = -math.inf    # best validation score so far (the run's ``metric``)
    best_epoch: int = 0
    best_weights: dict | None = None  # CPU copy of the best epoch's state_dict
    epochs_since_best: int = 0        # early stopping: patience used up so far
    train_time_s: float = 0.0         # training only, validation excluded
    history: list = field(default_factory=list)   # one dict per epoch: loss, valid/<metric>, ...
    rng: dict = field(default_factory=dict)       # RNG states at the end of ``epoch`` (see capture_rng)


def capture_rng(sampler: np.random.Generator) -> dict:
    return {"sampler": sampler.bit_generator.state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate()}


def restore_rng(states: dict, sampler: np.random.Generator) -> None:
    sampler.bit_generator.state = states["sampler"]
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    random.setstate(states["python"])


def _progress(iterable, total: int, desc: str, enabled: bool):
    """A tqdm bar on a terminal; in a log file its redraws would be noise (the per-epoch
    line is printed either way)."""
    if not (enabled and sys.stderr.isatty()):
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def training_loss(model, device: torch.device, mode: str):
    """The trainer's ``batch -> loss``: ``D.wrap``'s, through ``torch.compile(mode=mode)``
    unless ``mode`` is "off" (the ``compile`` config key).

    Only the loss is compiled -- its forward and, through AOTAutograd, its backward, where
    the launches of a small model's many tiny kernels are; the fused AdamW step and grad
    clipping stay eager (a few multi-tensor kernels). Compiling the callable, not the model,
    keeps ``model.state_dict()``'s keys (no ``_orig_mod.`` prefix), so checkpoints and saved
    weights are the same with or without it. ``dynamic=False``: one graph per batch shape;
    an epoch's last, smaller batch is a second shape, compiled once and reused, which beats
    dynamic-shape kernels for every step. Random numbers (cloze masks, dropout) inside the
    graph come from inductor's generator: the same distributions as eager, other draws. A
    model opts in with ``compiles = True``: its training shapes must not depend on the data.
    """
    if mode == "off":
        return D.wrap(model, device)
    if not getattr(model, "compiles", False):
        raise ConfigError(f"compile={mode}: {type(model).__name__} with this configuration cannot be compiled "
                          "(its training shapes depend on the data); use compile=off")
    _check_inductor(device, mode)
    return torch.compile(D.wrap(model, device), mode=mode, dynamic=False)


def _check_inductor(device: torch.device, mode: str) -> None:
    """Fail before training, with the fix, instead of at the first step deep inside inductor."""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401  (inductor's GPU kernels)
        except ImportError:
            raise RuntimeError(f"compile={mode} on a GPU needs Triton (pip install triton); or use compile=off") \
                from None
        return
    import shutil

    import torch._inductor.config as inductor
    if not any(name and shutil.which(name) for name in inductor.cpp.cxx):
        raise RuntimeError(f"compile={mode} on CPU needs a C++ compiler for inductor's kernels "
                           f"({', '.join(n for n in inductor.cpp.cxx if n)} not found); install g++, set CXX, "
                           "or use compile=off")


def lr_factor(train, step: int, total_steps: int) -> float:
    """The learning rate of 0-based ``step`` as a fraction of ``train.lr``: linear warmup
    from 0 over ``warmup_steps``, then 1 ("constant") or ``1 - step / total_steps``
    ("linear", reaching 0 at the end of ``epochs``; early stopping may end the run sooner) --
    the schedule of BERT4Rec's original code (BERT's ``optimization.py``). A function of the
    step alone, so a resumed run needs no scheduler state."""
    if step < train.warmup_steps:
        return step / train.warmup_steps
    if train.lr_schedule == "linear":
        return max(0.0, 1.0 - step / max(total_steps, 1))
    return 1.0


def improving_window(train) -> int:
    """A run whose best epoch is among its last ``improving_window`` epochs counts as still
    improving: half its patience (early stopping would have waited twice as long before
    calling the curve flat), and at least 2 so a run without early stopping (patience 0) is
    judged too."""
    return max(2, train.patience // 2)


def still_improving(state: TrainState, train) -> bool:
    """Whether training ended while the model was still getting better, so its numbers
    understate it: early stopping did not end the run (it ran out of epochs or of
    ``max_train_minutes``) and its best epoch is among the last ``improving_window`` epochs.
    A run that trained nothing (``epochs=0``, a counted model) is not."""
    if state.epoch == 0:
        return False
    if train.patience and state.epochs_since_best >= train.patience:
        return False   # early stopping ended it: the validation metric had levelled off
    return state.epoch - state.best_epoch < improving_window(train)


class Trainer:
    """Runs ``fit(state)`` for one model. ``batches`` is None when there is nothing to train
    (no trainable parameters or ``epochs=0``); then the model is only validated once."""

    def __init__(self, model, optimizer, batches, valid_evaluator, cfg, device, *, tracker,
                 checkpointer=None, on_epoch=None, progress: bool = False):
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.valid_evaluator, self.cfg, self.device = valid_evaluator, cfg, device
        self.tracker, self.checkpointer, self.on_epoch, self.progress = tracker, checkpointer, on_epoch, progress
        self.amp_dtype = autocast_dtype(cfg.train, device)
        self.compiled = cfg.train.compile != "off"
        self.compute_loss = training_loss(model, device, cfg.train.compile) if batches is not None else None

    def fit(self, state: TrainState) -> TrainState:
        sampler = np.random.default_rng(self.cfg.train.seed)
        if state.rng:
            restore_rng(state.rng, sampler)
        epochs = self.cfg.train.epochs if self.batches is not None else 0
        for epoch in range(state.epoch + 1, epochs + 1):
            if self._should_stop(state, epoch):
                break
            self._run_epoch(epoch, epochs, state, sampler)
        return state

    def _should_stop(self, state: TrainState, epoch: int) -> bool:
        t = self.cfg.train
        if t.patience and state.epochs_since_best >= t.patience:
            return True
        if t.max_train_minutes:
            # ranks agree on the mean so all of them stop at the same epoch under torchrun
            mean_time = float(D.all_reduce_sum(torch.tensor(state.train_time_s))) / max(D.world_size(), 1)
            if mean_time >= 60 * t.max_train_minutes:
                print(f"recboard: training time budget of {t.max_train_minutes} min reached after epoch "
                      f"{epoch - 1}", file=sys.stderr)
                return True
        return False

    def _run_epoch(self, epoch: int, epochs: int, state: TrainState, sampler) -> None:
        start = time.perf_counter()
        loss = self.train_epoch(epoch, epochs, sampler)
        state.train_time_s += time.perf_counter() - start
        valid = self.valid_evaluator.evaluate(self.model, self.amp_dtype)
        self._record(epoch, state, loss, valid, time.perf_counter() - start)
        state.epoch = epoch
        if self.checkpointer:
            state.rng = capture_rng(sampler)
            self.checkpointer.save(self.model, self.optimizer, state)
        if self.on_epoch is not None:
            self.on_epoch(epoch, valid)

    def train_epoch(self, epoch: int, epochs: int, sampler) -> float:
        """Mean training loss of one pass; a non-finite loss stops the run with advice."""
        t, model, optimizer = self.cfg.train, self.model, self.optimizer
        model.train()
        total, steps = torch.zeros((), device=self.device), 0
        per_epoch = self.batches.steps_per_epoch()
        batches = _progress(self.batches.epoch(sampler), per_epoch, f"epoch {epoch}/{epochs}", self.progress)
        for batch in batches:
            if t.lr_schedule != "constant" or t.warmup_steps:
                factor = lr_factor(t, (epoch - 1) * per_epoch + steps, t.epochs * per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = t.lr * factor
            if self.compiled:   # CUDA graphs: the last step's outputs may be overwritten now
                torch.compiler.cudagraph_mark_step_begin()
            with autocast(self.device.type, self.amp_dtype):
                loss = self.compute_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                clip_gradients(model, t.grad_clip)
            optimizer.step()
            total += loss.detach().float()
            steps += 1
            if steps % 50 == 0 and not torch.isfinite(total):
                break
        mean_loss = float(total) / max(steps, 1)
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(f"training loss became {mean_loss} in epoch {epoch} (within its first "
                                     f"{steps} steps); lower lr (now {t.lr}) or check the data")
        return mean_loss

    def _record(self, epoch: int, state: TrainState, loss: float, valid: dict, epoch_time_s: float) -> None:
        metric = self.cfg.train.metric
        improved = valid[metric] > state.best_metric
        if improved:
            state.best_metric, state.best_epoch, state.epochs_since_best = valid[metric], epoch, 0
            state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            state.epochs_since_best += 1
        logged = {"epoch_time_s": epoch_time_s, **{f"valid/{k}": v for k, v in valid.items()}}
        state.history.append({"epoch": epoch, "loss": loss, **logged})
        self.tracker.log_metrics({"train/loss": loss, **logged}, step=epoch)
        if self.progress:
            print(f"epoch {epoch:3d}  loss {loss:.4f}  valid {metric} {valid[metric]:.4f}"
                  f"{'  *' if improved else ''}", file=sys.stderr)

    def best_validation(self, state: TrainState) -> dict:
        """Load the best epoch's weights into the model and return its validation metrics;
        an untrained model is validated once here (recorded as epoch 0)."""
        if state.best_weights is not None:
            self.model.load_state_dict(state.best_weights)
            best = next(h for h in state.history if h["epoch"] == state.best_epoch)
            return {k[len("valid/"):]: v for k, v in best.items() if k.startswith("valid/")}
        valid = self.valid_evaluator.evaluate(self.model, self.amp_dtype)
        state.history.append({"epoch": 0, **{f"valid/{k}": v for k, v in valid.items()}})
        self.tracker.log_metrics({f"valid/{k}": v for k, v in valid.items()}, step=0)
        if self.on_epoch is not None:
            self.on_epoch(0, valid)
        return valid
