"""Random scores: the floor. HR@10 under full ranking should be about 10 / n_items."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recboard.datasets.batches import ImpressionBatch


@dataclass
class RandomConfig:
    seed: int = 0


class RandomModel(nn.Module):
    config_class = RandomConfig
    tasks = {"sequence", "impression"}

    def __init__(self, config: RandomConfig, data):
        super().__init__()
        self.n_items = data.n_items
        self.generator = torch.Generator().manual_seed(config.seed)
        self.register_buffer("device_probe", torch.zeros(()), persistent=False)

    def loss(self, batch):
        raise RuntimeError("the random model has nothing to train")

    def score(self, batch, item_vectors=None) -> torch.Tensor:
        if isinstance(batch, ImpressionBatch):
            shape = batch.candidates.shape
        else:
            shape = (batch.seq.shape[0], self.n_items + 1)
        # drawn on the CPU generator so scores do not depend on the device
        return torch.rand(shape, generator=self.generator).to(self.device_probe.device)
