"""Data-parallel training with ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node=N -m recboard.benchmarks.cli run ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK; the runner then uses NCCL on GPUs (gloo on CPU), gives each rank a slice of
every global batch (so N ranks at ``batch_size / N`` match one process at ``batch_size``),
shards evaluation rows and sums metric totals across ranks, and lets only rank 0 log to
MLflow and write checkpoints.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_from_env(device_name: str) -> str:
    """Start the process group when launched by torchrun; returns the device to use."""
    if world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return device_name
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def shard(n: int) -> slice:
    """This rank's strided share of ``n`` rows."""
    return slice(rank(), n, world_size()) if active() else slice(0, n)


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if active():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


class LossModule(nn.Module):
    """DDP synchronises gradients through ``forward``; our models expose ``loss``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def wrap(model: nn.Module, device: torch.device):
    """A callable ``batch -> loss``: ``model.loss`` itself, or under torchrun the model
    wrapped in DistributedDataParallel (gradients are clipped on ``model``'s parameters,
    which DDP shares)."""
    if not active():
        return model.loss
    ids = [device.index] if device.type == "cuda" else None
    # frozen encoder layers / shared unknown embeddings may get no gradient in a step
    ddp = nn.parallel.DistributedDataParallel(LossModule(model), device_ids=ids, find_unused_parameters=True)
    return ddp
