"""Per-epoch checkpoints for ``bench run --resume``.

A checkpoint holds everything the next epoch depends on — model and optimizer state, the
torch / numpy / python RNG states, the epoch, early-stopping bookkeeping, the best weights
so far and the MLflow run id — so a run killed after epoch k and resumed ends with exactly
the metrics of an uninterrupted run (on CPU with a fixed seed). Written with temp file +
rename: a kill mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import torch

FILE = "checkpoint.pt"


def config_digest(cfg) -> str:
    """Resuming with a different configuration would silently mix two runs: refuse it."""
    flat = {k: v for k, v in cfg.flat().items() if k not in ("epochs", "device")}
    blob = json.dumps([cfg.model_name, cfg.dataset_name, flat], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Checkpointer:
    def __init__(self, directory, cfg, write: bool = True):
        self.write = write  # only rank 0 writes under torchrun
        self.directory = Path(directory)
        self.path = self.directory / FILE
        self.digest = config_digest(cfg)
        self.run_id = None

    def save(self, model, optimizer, **state) -> None:
        from recboard.datasets.cache import atomic_write_bytes

        if not self.write:
            return
        payload = {
            "config_digest": self.digest, "mlflow_run_id": self.run_id,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": random.getstate(),
            **state,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buffer.getvalue())

    def load(self, model, optimizer) -> dict | None:
        """Restore model/optimizer/RNG from the checkpoint; None when there is none yet."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise RuntimeError(f"checkpoint {self.path} is unreadable ({exc}); delete it to start over") from exc
        if state.get("config_digest") != self.digest:
            raise RuntimeError(f"checkpoint {self.path} was written by a run with a different configuration; "
                               "resume with the same --set options or use another --checkpoint-dir")
        model.load_state_dict(state["model"])
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(state["python_rng"])
        return state
