"""FPMC: factorizing personalized Markov chains (Rendle et al., "Factorizing Personalized
Markov Chains for Next-Basket Recommendation", WWW'10), a Table 2 baseline of the BERT4Rec
paper, whose authors implemented it themselves (§4.3).

With baskets of one item, the previous item l: x(u, l, i) = <v^UI_u, v^IU_i> + <v^IL_i, v^LI_l>
(matrix factorisation plus a factorised item-to-item transition; the paper's user-to-last
term cancels in the ranking loss and is left out, as in the paper). Trained with S-BPR:
for every consecutive pair (l, i) in the user's training window, ``num_negatives`` items j
drawn uniformly from the known items the window does not hold, loss -ln sigma(x_uli - x_ulj)
plus the paper's L2 on the factors the example touches (``l2_reg``). A window's first item
has no previous item in the window and is not a target (the presets' windows of two items,
one per start, give every pair of the training part). Adam(W) from the harness replaces
the paper's SGD.

Validation and test, the same for every baseline here: the model trains on each user's
items but the last two; validation predicts item n-1 from the items before it; test
predicts item n from all items before it. The validation item is then input and masked
from the full ranking as seen, but never trained on. FPMC scores the test item from the
user and the last input item, which at test time is the validation item: its transition
factors (learnt from other users' sequences) are used, the user's are not updated.

Items never seen in training share one embedding row (``layers.item_rows``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recboard.datasets.batches import PAD, ItemCatalog, SequenceBatch
from recboard.models.checks import require
from recboard.models.layers import adopt_catalog, candidate_logits, float32_logits, item_coverage, rows_to_items
from recboard.models.negatives import batch_users, check_users, masked_mean, outside, uniform_rows


@dataclass
class FPMCConfig:
    hidden_size: int = 64       # k_UI = k_IL, one factor size for both parts; BERT4Rec §4.3 tunes d in {16..256}
    num_negatives: int = 1      # negatives per (l, i); LearnSBPR-FPMC draws one per step
    l2_reg: float = 0.0         # the paper's lambda on the four factor vectors of each example
    init_std: float = 0.01      # N(0, init_std) factors: LearnSBPR-FPMC draws them from a zero-mean normal

    def check(self) -> None:
        require("fpmc", self, [
            ("hidden_size", self.hidden_size >= 1, "a positive integer"),
            ("num_negatives", self.num_negatives >= 1, "a positive integer"),
            ("l2_reg", self.l2_reg >= 0, ">= 0"),
            ("init_std", self.init_std > 0, "> 0"),
        ])


PRESETS = {
    # BERT4Rec §4.3: d and L2 tuned on validation (d in {16..256}, L2 in {1, 0.1, ..., 0.0001}).
    # Windows of 2 items, one start per item (window_step 1): every (previous, next) pair of
    # the training part once an epoch, each its own example as in LearnSBPR-FPMC, 2048 a step.
    "*": {"hidden_size": 64, "l2_reg": 1e-4, "lr": 5e-3, "batch_size": 2048, "max_len": 2, "window_step": 1,
          "weight_decay": 0.0, "epochs": 20, "patience": 3},
    # measured (2-core CPU): 9 epochs, ~4 min, sampled-pop100 test HR@10 .540, NDCG@10 .340
    # (paper: .5946 / .3439)
    "ml-1m": {"hidden_size": 64},
    # 20 epochs at lr 5e-3 ended still improving on Beauty (best epoch 20 of 20, 3 seeds, test HR@10 .216);
    # these (sampled-pop100, seeds 1-3): early stopping at epochs 62, 73, 82 (best 59, 70, 79),
    # 14-19 min a run, test HR@10 .2434 / NDCG@10 .1482 (paper .2401 / .1211)
    "beauty": {"hidden_size": 64, "l2_reg": 1e-3, "lr": 1e-2, "epochs": 100},
    "mind": {"hidden_size": 64, "epochs": 10},
    "synthetic_seq": {"hidden_size": 32, "lr": 1e-2, "batch_size": 32, "max_len": 20, "window_step": 0,
                      "epochs": 20, "patience": 0},
}

SEARCH_SPACE = {
    "hidden_size": ("categorical", [16, 32, 64, 128, 256]),   # BERT4Rec §4.3
    "l2_reg": ("logfloat", 1e-5, 1e-1),
    "num_negatives": ("categorical", [1, 4, 16]),
    "lr": ("logfloat", 1e-4, 1e-2),
    "batch_size": ("categorical", [32, 64, 128, 256]),
}


class FPMC(nn.Module):
    config_class = FPMCConfig

    def __init__(self, config: FPMCConfig, catalog: ItemCatalog):
        super().__init__()
        adopt_catalog(self, config, catalog)
        d, n_rows = config.hidden_size, self.n_known + 2   # rows: pad, known, unknown
        self.user_item = nn.Embedding(check_users(catalog.n_users, "fpmc"), d)   # v^UI
        self.item_user = nn.Embedding(n_rows, d, padding_idx=PAD)                # v^IU
        self.item_last = nn.Embedding(n_rows, d, padding_idx=PAD)                # v^IL
        self.last_item = nn.Embedding(n_rows, d, padding_idx=PAD)                # v^LI: no previous item -> 0
        for table in (self.user_item, self.item_user, self.item_last, self.last_item):
            nn.init.normal_(table.weight, std=config.init_std)
            if table.padding_idx is not None:
                with torch.no_grad():
                    table.weight[PAD].zero_()

    def describe(self) -> dict:
        return item_coverage(self.n_known, self.n_items)

    def item_vectors(self) -> None:
        return None

    def query(self, users: torch.Tensor, last_rows: torch.Tensor) -> torch.Tensor:
        """[..., 2d]: [v^UI_u, v^LI_l], so x(u, l, i) = query . [v^IU_i, v^IL_i]."""
        return torch.cat([self.user_item(users), self.last_item(last_rows)], -1)

    def candidates(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.item_user(rows), self.item_last(rows)], -1)

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Mean S-BPR loss over every (previous, next) pair of the windows."""
        rows = self.item_to_row[batch.seq]                                    # [B, M]
        users = batch_users(batch, "fpmc")[:, None].expand(-1, rows.size(1) - 1)
        query = self.query(users, rows[:, :-1])                               # [B, M-1, 2d]
        targets = self.candidates(rows[:, 1:])
        negatives = uniform_rows(self.n_known, (len(rows), rows.size(1) - 1, self.config.num_negatives), rows.device)
        drawn = self.candidates(negatives)                                    # [B, M-1, k, 2d]
        # left padding: a real previous item is always followed by a real target
        keep = (rows[:, :-1] != PAD)[..., None] & outside(negatives, rows)
        x_uli = (query * targets).sum(-1)
        x_ulj = (query[:, :, None] * drawn).sum(-1)
        norms = (query.square().sum(-1) + targets.square().sum(-1))[..., None] + drawn.square().sum(-1)
        return masked_mean(F.softplus(x_ulj - x_uli[..., None]) + self.config.l2_reg * norms, keep)

    def last_query(self, batch: SequenceBatch) -> torch.Tensor:
        """[B, 2d]: the query of each user and its last input item."""
        return self.query(batch_users(batch, "fpmc"), self.item_to_row[batch.seq[:, -1]])

    def score(self, batch: SequenceBatch, item_vectors=None) -> torch.Tensor:
        """[B, n_items + 1]: x(u, l, i) for every item i, l the last input item."""
        # [v^IU, v^IL] of the known rows, then the unknown row
        candidates = torch.cat([self.item_user.weight[1:], self.item_last.weight[1:]], -1)
        return rows_to_items(float32_logits(self.last_query(batch), candidates), self.item_to_row)

    def score_items(self, batch: SequenceBatch, items: torch.Tensor, item_vectors=None) -> torch.Tensor:
        """[B, C]: x(u, l, i) for the items [B, C] only (the sampled protocols' candidates)."""
        return candidate_logits(self.last_query(batch), self.candidates(self.item_to_row[items]))
