"""Per-epoch checkpoints for ``bench run --resume``.

A checkpoint holds everything the next epoch depends on: the model and optimizer state, the
MLflow run id and the trainer's whole ``TrainState`` (epoch, early-stopping bookkeeping, best
weights so far, elapsed training time and every RNG state), so a run killed after epoch k
and resumed ends with exactly the metrics of an uninterrupted run (on CPU with a fixed
seed). Written with temp file + rename: a kill mid-write leaves the previous checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import torch

from recboard.benchmarks.training.trainer import TrainState

FILE = "checkpoint.pt"
FORMAT = 2   # 2: the trainer state as one TrainState record


def config_digest(cfg) -> str:
    """Resuming with a different configuration would silently mix two runs: refuse it.
    Keys that change how, not what, is trained are left out (``compile`` also keeps the
    digests of checkpoints written before the key existed)."""
    flat = {k: v for k, v in cfg.flat().items() if k not in ("epochs", "device", "compile")}
    blob = json.dumps([cfg.model_name, cfg.dataset_name, flat], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Checkpointer:
    def __init__(self, directory, cfg, write: bool = True):
        self.write = write  # only rank 0 writes under torchrun
        self.directory = Path(directory)
        self.path = self.directory / FILE
        self.digest = config_digest(cfg)
        self.run_id = None

    def save(self, model, optimizer, state: TrainState) -> None:
        from recboard.datasets.files import atomic_write_bytes

        if not self.write:
            return
        payload = {"format": FORMAT, "config_digest": self.digest, "mlflow_run_id": self.run_id,
                   "model": model.state_dict(),
                   "optimizer": optimizer.state_dict() if optimizer is not None else None,
                   # the fields as they are: asdict would deep-copy the best weights every epoch
                   "train_state": {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buffer.getvalue())

    def load(self, model, optimizer) -> tuple[TrainState, str | None] | None:
        """Restore model and optimizer from the checkpoint; (trainer state, MLflow run id),
        or None when there is no checkpoint yet."""
        if not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise RuntimeError(f"checkpoint {self.path} is unreadable ({exc}); delete it to start over") from exc
        if payload.get("format") != FORMAT:
            raise RuntimeError(f"checkpoint {self.path} was written by another version of recboard "
                               f"(format {payload.get('format', 1)}, expected {FORMAT}); delete it to start over")
        if payload.get("config_digest") != self.digest:
            raise RuntimeError(f"checkpoint {self.path} was written by a run with a different configuration; "
                               "resume with the same --set options or use another --checkpoint-dir")
        model.load_state_dict(payload["model"])
        if optimizer is not None and payload["optimizer"] is not None:
            optimizer.load_state_dict(payload["optimizer"])
        return TrainState(**payload["train_state"]), payload["mlflow_run_id"]
