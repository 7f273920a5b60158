"""The optimizer a run trains with (``make_optimizer``): AdamW, and SparseAdam for the
embedding tables that give sparse gradients.

A table built with ``nn.Embedding(sparse=True)`` (the ``sparse_updates`` key of BPR-MF and
GRU4Rec) trains with SparseAdam, a lazy Adam: a step moves only the rows its batch read, so
its cost follows the batch, not the table. AdamW would move every row every step: on Beauty's
54,542 items that dense step was 41% of a GRU4Rec step (CPU profile). The official GRU4Rec
code updates only the rows a mini-batch read too (its indexed Adagrad). The model's other
parameters keep AdamW; both step together as one ``SparseDenseAdam``.
"""
from __future__ import annotations

import torch

from recboard.benchmarks.config import ConfigError, RunConfig


class SparseDenseAdam:
    """SparseAdam over the sparse tables and AdamW over everything else, used as one
    optimizer: ``param_groups`` are both optimizers' groups (the trainer's lr schedule sets
    them all), and the state dict holds both."""

    def __init__(self, sparse: torch.optim.Optimizer, dense: torch.optim.Optimizer):
        self.sparse, self.dense = sparse, dense
        self.param_groups = sparse.param_groups + dense.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sparse.zero_grad(set_to_none)
        self.dense.zero_grad(set_to_none)

    def step(self) -> None:
        self.sparse.step()
        self.dense.step()

    def state_dict(self) -> dict:
        return {"sparse": self.sparse.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sparse.load_state_dict(state["sparse"])
        self.dense.load_state_dict(state["dense"])


def adamw(params: list, cfg: RunConfig, device) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and norms (tensors of fewer than 2 dimensions)."""
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.train.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, fused=device.type == "cuda")


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, device):
    """AdamW, SparseAdam or both (see the module docstring); None for a model with nothing
    to train."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    sparse = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse
              and m.weight.requires_grad]
    if not sparse:
        return adamw(params, cfg, device)
    if cfg.train.weight_decay:
        raise ConfigError(f"weight_decay={cfg.train.weight_decay}: SparseAdam (sparse embedding updates) has "
                          "no weight decay; set weight_decay=0 and regularise in the loss (e.g. l2_reg)")
    lazy = torch.optim.SparseAdam(sparse, lr=cfg.train.lr)
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in params if id(p) not in sparse_ids]
    return SparseDenseAdam(lazy, adamw(dense, cfg, device)) if dense else lazy
