"""Popularity: every user gets items ranked by how often they occur in what the model is
trained on (``catalog.train_counts``: leave-one-out training sequences, or clicks in MIND's
training impressions; the benchmark route decides)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from recboard.datasets.batches import ImpressionBatch, ItemCatalog
from recboard.models.layers import CountedModel


@dataclass
class PopularityConfig:
    pass


class PopularityModel(CountedModel):
    config_class = PopularityConfig

    def __init__(self, config: PopularityConfig, catalog: ItemCatalog):
        super().__init__()
        counts = torch.as_tensor(catalog.train_counts, dtype=torch.float32)
        self.register_buffer("counts", counts)

    def score(self, batch, item_vectors=None) -> torch.Tensor:
        if isinstance(batch, ImpressionBatch):
            return self.counts[batch.candidates]
        return self.counts.expand(batch.seq.shape[0], -1).clone()
