"""Random scores: the floor. HR@10 under full ranking should be about 10 / n_items."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from recboard.datasets.batches import ImpressionBatch, ItemCatalog
from recboard.models.layers import CountedModel


@dataclass
class RandomConfig:
    pass   # no seed of its own: a ``seed`` key here would shadow the run's ``--set seed=N``


class RandomModel(CountedModel):
    config_class = RandomConfig

    def __init__(self, config: RandomConfig, catalog: ItemCatalog):
        super().__init__()
        self.n_items = catalog.n_items
        # The run's seed: the runner calls torch.manual_seed(seed) before building the model,
        # so `--set seed=7` reseeds these scores too, and equal seeds give equal scores.
        self.generator = torch.Generator().manual_seed(torch.initial_seed())
        self.register_buffer("device_probe", torch.zeros(()), persistent=False)

    def score(self, batch, item_vectors=None) -> torch.Tensor:
        if isinstance(batch, ImpressionBatch):
            shape = batch.candidates.shape
        else:
            shape = (batch.seq.shape[0], self.n_items + 1)
        # drawn on the CPU generator so scores do not depend on the device
        return torch.rand(shape, generator=self.generator).to(self.device_probe.device)
