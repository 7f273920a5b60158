"""Train one model on one dataset, validate every epoch, stop early, test, record in MLflow.

``run(cfg)`` is what ``bench run`` calls. The loop is deliberately plain (nanoGPT-style):
training data is padded once and kept on the device, each epoch shuffles indices there,
bf16 autocast and fused AdamW on CUDA, validation after every epoch on the device, the best
epoch's weights kept for the final test.
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
from recboard.benchmarks import evaluation as E
from recboard.benchmarks.config import RunConfig
from recboard.datasets.batches import ImpressionBatch, NewsData, SequenceBatch


class IncompatibleModelError(ValueError):
    pass


class NonFiniteLossError(RuntimeError):
    pass


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
    config: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, "protocol": self.protocol,
                "metrics": self.test_metrics, "valid_metrics": self.valid_metrics,
                "best_epoch": self.best_epoch, "mlflow_run_id": self.mlflow_run_id,
                "device": self.device, "wall_time_s": round(self.wall_time_s, 3),
                "train_time_s": round(self.train_time_s, 3), "n_params": self.n_params,
                "history": self.history, "config": self.config, "dataset_stats": self.stats}


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


def model_task(model_cls, data) -> tuple[str, bool]:
    """(task the model trains on, whether impressions are scored through full-item scores)."""
    tasks = getattr(model_cls, "tasks", set())
    if isinstance(data, NewsData):
        if "impression" in tasks:
            return "impression", False
        if "sequence" in tasks:
            return "sequence", True
    elif "sequence" in tasks:
        return "sequence", False
    raise IncompatibleModelError(f"model {model_cls.__name__} (tasks: {sorted(tasks)}) cannot serve "
                                 f"{type(data).__name__} data")


class TrainingData:
    """Training examples on the device and the batches drawn from them each epoch."""

    def __init__(self, data, task: str, cfg: RunConfig, device):
        self.task, self.device, self.cfg = task, device, cfg
        if task == "sequence":
            windows = E.window_sequences(E.training_sequences(data), cfg.max_len)
            self.sequences = torch.as_tensor(windows, device=device)
            self.size = len(windows)
        else:
            block = data.train
            pos_imp, pos_news, neg_offsets, neg_values = E.impression_training_pairs(block)
            self.pos_imp, self.pos_news = pos_imp, pos_news
            self.neg_offsets, self.neg_values = neg_offsets, neg_values
            history = E.left_pad([block.history(i) for i in range(len(block))], cfg.train.history_len)
            self.history = torch.as_tensor(history, device=device)
            self.size = len(pos_news)

    def steps_per_epoch(self) -> int:
        t = self.cfg.train
        steps = math.ceil(self.size / t.batch_size)
        return min(steps, t.max_steps_per_epoch) if t.max_steps_per_epoch else steps

    def batches(self, rng: np.random.Generator):
        t = self.cfg.train
        order = rng.permutation(self.size)
        for s in range(self.steps_per_epoch()):
            index = order[s * t.batch_size:(s + 1) * t.batch_size]
            index = index[D.shard(len(index))]  # torchrun: each rank takes its slice of the global batch
            if self.task == "sequence":
                yield SequenceBatch(self.sequences[torch.as_tensor(index, device=self.device)])
            else:
                yield self._impression_batch(index, rng)

    def _impression_batch(self, index: np.ndarray, rng) -> ImpressionBatch:
        """Each click with ``npratio`` negatives drawn from its own impression (with
        replacement when it has fewer; an impression without negatives borrows random news
        ids from other impressions' negatives)."""
        npratio = self.cfg.train.npratio
        imp = self.pos_imp[index]
        start, count = self.neg_offsets[imp], np.diff(self.neg_offsets)[imp]
        draw = (rng.random((len(index), npratio)) * np.maximum(count, 1)[:, None]).astype(np.int64)
        picks = np.where(count[:, None] > 0, start[:, None] + draw,
                         rng.integers(0, max(len(self.neg_values), 1), (len(index), npratio)))
        negatives = self.neg_values[picks] if len(self.neg_values) else np.ones_like(picks)
        candidates = np.concatenate([self.pos_news[index, None], negatives], axis=1)
        labels = np.zeros(candidates.shape, dtype=np.float32)
        labels[:, 0] = 1
        dev = self.device
        return ImpressionBatch(self.history[torch.as_tensor(imp, device=dev)],
                               torch.as_tensor(candidates, device=dev),
                               torch.as_tensor(labels, device=dev),
                               torch.ones(candidates.shape, dtype=torch.bool, device=dev))


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, device) -> torch.optim.Optimizer | None:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, fused=device.type == "cuda")


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def run(cfg: RunConfig, *, data=None, data_dir=None, cache_dir=None, on_epoch=None, tracking: bool = True,
        nested: bool = False, run_name: str | None = None, extra_tags: dict | None = None,
        evaluate_test: bool = True, progress: bool = False, checkpoint_dir=None,
        resume: bool = False) -> RunResult:
    """Train ``cfg.model_name`` on ``cfg.dataset_name`` and return validation/test metrics.

    ``on_epoch(epoch, valid_metrics)`` runs after each validation (Optuna pruning hooks in
    here); if it raises, the MLflow run ends KILLED (pruned/interrupted) or FAILED and the
    exception propagates. ``checkpoint_dir`` + ``resume`` continue an interrupted run
    (see ``recboard.benchmarks.checkpoint``).
    """
    from recboard.datasets.registry import dataset_spec, load_dataset
    from recboard.models.registry import model_class
    from recboard.benchmarks import tracking as T
    from recboard.benchmarks.checkpoint import Checkpointer

    wall_start = time.perf_counter()
    t = cfg.train
    seed_everything(t.seed)
    device = pick_device(D.init_from_env(t.device))
    if device.type == "cuda":  # TF32 for the float32 output layers over all items
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if data is None:
        data = load_dataset(cfg.dataset_name, data_dir=data_dir, cache_dir=cache_dir)
    if data.stats.get("missing_news_ids"):
        print(f"recboard: {cfg.dataset_name}: {data.stats['missing_news_ids']:,} news ids "
              f"({data.stats.get('missing_news_refs', 0):,} references) are not in news.tsv; "
              "they share the unknown-news slot (empty title)", file=sys.stderr)
    cls = model_class(cfg.model_name)
    task, impressions_via_sequence = model_task(cls, data)
    model = cls(cfg.model, data).to(device)
    optimizer = make_optimizer(model, cfg, device)
    n_params = sum(p.numel() for p in model.parameters())
    amp_dtype = torch.bfloat16 if (t.amp and device.type == "cuda") else None
    protocol = t.protocol

    checkpointer = Checkpointer(checkpoint_dir, cfg, write=D.is_main()) if checkpoint_dir else None
    state = checkpointer.load(model, optimizer) if (checkpointer and resume) else None

    tags = {"recboard.model": cfg.model_name, "recboard.dataset": cfg.dataset_name,
            "recboard.task": dataset_spec(cfg.dataset_name).task, "recboard.protocol": protocol,
            "recboard.metric": t.metric, "recboard.device": device_name(device),
            "recboard.git_commit": T.git_commit(), "recboard.kind": "run",
            "recboard.fingerprint": data.stats.get("fingerprint", "in-memory")}
    tags.update(extra_tags or {})
    describe = model.describe() if hasattr(model, "describe") else {}
    params = {**cfg.flat(), **{f"model.{k}": v for k, v in describe.items()}}
    tracker_cls = T.Tracker if (tracking and D.is_main()) else T.NullTracker
    tracker = tracker_cls(run_name or f"{cfg.model_name}@{cfg.dataset_name}", tags, params, nested=nested,
                          resume_run_id=state.get("mlflow_run_id") if state else None)
    if checkpointer:
        checkpointer.run_id = tracker.run_id
    status = "FAILED"
    try:
        if not state:
            tracker.log_dict({"config": cfg.flat(), "sources": cfg.sources, "dataset_stats": data.stats},
                             "config.json")
            tracker.log_metrics({"n_params": n_params,
                                 **{f"data/{k}": v for k, v in data.stats.items()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)}})
        result = _train_and_test(cfg, data, model, optimizer, task, impressions_via_sequence, device,
                                 amp_dtype, tracker, on_epoch, evaluate_test, progress, checkpointer, state,
                                 wall_start)
        result.n_params, result.device = n_params, device_name(device)
        result.mlflow_run_id = tracker.run_id
        result.stats = {k: v for k, v in data.stats.items() if k != "cache_path"}
        tracker.log_metrics({"wall_time_s": result.wall_time_s, "train_time_s": result.train_time_s})
        status = "FINISHED"
        return result
    except BaseException as exc:
        if type(exc).__name__ in ("TrialPruned", "KeyboardInterrupt") or isinstance(exc, SystemExit):
            status = "KILLED"
        else:
            tracker.set_tags({"recboard.error": f"{type(exc).__name__}: {exc}"[:4000]})
        raise
    finally:
        tracker.end(status)


def _train_and_test(cfg, data, model, optimizer, task, impressions_via_sequence, device, amp_dtype,
                    tracker, on_epoch, evaluate_test, progress, checkpointer, state, wall_start) -> RunResult:
    t = cfg.train
    valid_eval = E.build_evaluator(data, "valid", cfg, device, impressions_via_sequence)
    trains = optimizer is not None and t.epochs > 0
    train_data = TrainingData(data, task, cfg, device) if trains else None
    compute_loss = D.wrap(model, device) if trains else None
    rng = np.random.default_rng(t.seed)
    history, best, best_epoch, best_state, bad_epochs, start_epoch = [], -math.inf, 0, None, 0, 1
    train_time = 0.0
    if state:
        history, best, best_epoch, bad_epochs = state["history"], state["best"], state["best_epoch"], state["bad_epochs"]
        best_state, start_epoch, train_time = state["best_state"], state["epoch"] + 1, state["train_time"]
        rng.bit_generator.state = state["numpy_rng"]
    epochs = t.epochs if trains else 0

    for epoch in range(start_epoch, epochs + 1):
        if t.patience and bad_epochs >= t.patience:
            break
        if t.max_train_minutes:
            # ranks agree on the mean so all of them stop at the same epoch under torchrun
            mean_train_time = float(D.all_reduce_sum(torch.tensor(train_time))) / max(D.world_size(), 1)
            if mean_train_time >= 60 * t.max_train_minutes:
                print(f"recboard: training time budget of {t.max_train_minutes} min reached after epoch "
                      f"{epoch - 1}", file=sys.stderr)
                break
        epoch_start = time.perf_counter()
        model.train()
        total, steps = torch.zeros((), device=device), 0
        for batch in _progress(train_data.batches(rng), train_data.steps_per_epoch(), f"epoch {epoch}/{epochs}",
                               progress):
            with E.autocast(device.type, amp_dtype):
                loss = compute_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            total += loss.detach().float()
            steps += 1
            if steps % 50 == 0 and not torch.isfinite(total):
                break
        mean_loss = float(total) / max(steps, 1)
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(f"training loss became {mean_loss} in epoch {epoch} (within its first "
                                     f"{steps} steps); lower lr (now {t.lr}) or check the data")
        train_time += time.perf_counter() - epoch_start
        valid = valid_eval.evaluate(model, amp_dtype)
        score = valid[t.metric]
        improved = score > best
        if improved:
            best, best_epoch, bad_epochs = score, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        logged = {"epoch_time_s": time.perf_counter() - epoch_start, **{f"valid/{k}": v for k, v in valid.items()}}
        history.append({"epoch": epoch, "loss": mean_loss, **logged})
        tracker.log_metrics({"train/loss": mean_loss, **logged}, step=epoch)
        if progress:
            print(f"epoch {epoch:3d}  loss {mean_loss:.4f}  valid {t.metric} {score:.4f}"
                  f"{'  *' if improved else ''}", file=sys.stderr)
        if checkpointer:
            checkpointer.save(model, optimizer, epoch=epoch, history=history, best=best, best_epoch=best_epoch,
                              bad_epochs=bad_epochs, best_state=best_state, train_time=train_time,
                              numpy_rng=rng.bit_generator.state)
        if on_epoch is not None:
            on_epoch(epoch, valid)

    if best_state is not None:
        model.load_state_dict(best_state)
        valid = next((h for h in history if h["epoch"] == best_epoch))
        valid = {k[len("valid/"):]: v for k, v in valid.items() if k.startswith("valid/")}
    else:
        valid = valid_eval.evaluate(model, amp_dtype)
        history.append({"epoch": 0, **{f"valid/{k}": v for k, v in valid.items()}})
        tracker.log_metrics({f"valid/{k}": v for k, v in valid.items()}, step=0)
        if on_epoch is not None:
            on_epoch(0, valid)
    tracker.log_metrics({**{f"best_valid/{k}": v for k, v in valid.items()}, "best_epoch": best_epoch})
    test = {}
    if evaluate_test:
        del valid_eval
        test = E.build_evaluator(data, "test", cfg, device, impressions_via_sequence).evaluate(model, amp_dtype)
        tracker.log_metrics({f"test/{k}": v for k, v in test.items()})
    return RunResult(cfg.model_name, cfg.dataset_name, cfg.train.protocol, valid, test, best_epoch, history,
                     time.perf_counter() - wall_start, train_time, "", 0, None, cfg.flat())
