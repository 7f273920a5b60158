"""BPR-MF: matrix factorisation trained with the pairwise BPR loss (Rendle et al., "BPR:
Bayesian Personalized Ranking from Implicit Feedback", UAI'09), a Table 2 baseline of the
BERT4Rec paper (Sun et al., CIKM'19), whose authors implemented it themselves (§4.3).

score(u, i) = <p_u, q_i>, no biases (the paper's model). Each training step takes every
item of the user's training window as a positive i and draws ``num_negatives`` items j
uniformly from the known items the window does not hold, or, with ``skip_history``, that
the user's whole training part does not hold (the original's: all of the user's non-items,
see ``negatives.py``); the loss is mean -ln sigma(x_ui - x_uj) plus
Rendle's per-example L2 on the vectors the triple touches (``l2_reg``). Plain Adam(W)
from the harness replaces the paper's SGD with bootstrap sampling. With ``sparse_updates``
the tables give sparse gradients and the harness trains them with SparseAdam (a lazy Adam):
a step moves only the rows its batch read, where AdamW moves every row of both tables every
step, which made an ML-20m epoch grow with users x steps (docs/scale.md).

Validation and test, the same for every baseline here: the model trains on each user's
items but the last two; validation predicts item n-1 from the items before it; test
predicts item n from all items before it. The validation item is then input and masked
from the full ranking as seen, but never trained on. BPR-MF reads only the user index
(``batch.user``), not the input items, so the validation item does not change its test
scores.

Items never seen in training share one embedding row (``layers.item_rows``), which no
gradient reaches, as in SASRec.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recboard.datasets.batches import PAD, ItemCatalog, SequenceBatch
from recboard.models.checks import require
from recboard.models.layers import adopt_catalog, candidate_logits, float32_logits, item_coverage, rows_to_items
from recboard.models.negatives import batch_users, check_users, keep_history, masked_mean, uniform_rows, unseen


@dataclass
class BPRMFConfig:
    hidden_size: int = 64       # factors d; BERT4Rec §4.3 tunes d in {16, 32, 64, 128, 256}
    num_negatives: int = 1      # negatives per positive; LearnBPR's bootstrap sampling draws one
    l2_reg: float = 0.0         # lambda on ||p_u||^2 + ||q_i||^2 + ||q_j||^2 per triple (LearnBPR's regularisation)
    init_std: float = 0.1       # N(0, init_std) factors, MyMediaLite's BPRMF default (Rendle's library)
    sparse_updates: bool = False   # sparse table gradients + SparseAdam: a step's cost follows its batch
    skip_history: bool = False  # negatives skip all the user's training items, not only the window's (negatives.py)

    def check(self) -> None:
        require("bpr_mf", self, [
            ("hidden_size", self.hidden_size >= 1, "a positive integer"),
            ("num_negatives", self.num_negatives >= 1, "a positive integer"),
            ("l2_reg", self.l2_reg >= 0, ">= 0"),
            ("init_std", self.init_std > 0, "> 0"),
        ])


PRESETS = {
    # BERT4Rec §4.3: d and L2 tuned on validation (d in {16..256}, L2 in {1, 0.1, ..., 0.0001}).
    # BPR-MF ignores order, so the window only batches positives: short windows (10 items,
    # 256 a step) put each user in ~16 steps an epoch, where long ones would update a user's
    # vector once or twice an epoch (Adam moves it ~lr a step). lr 5e-3: 1e-3 learnt ~3x slower.
    "*": {"hidden_size": 64, "l2_reg": 1e-4, "lr": 5e-3, "batch_size": 256, "max_len": 10,
          "weight_decay": 0.0, "epochs": 20, "patience": 3},
    # tuned on validation (bench tune, 10 TPE trials, sampled-pop100, 2-core CPU): d 128, L2 1.9e-3,
    # 4 negatives, lr 1.7e-3 (the old d 64 / lr 5e-3 recipe: test HR@10 .342; this one .365 at 20
    # epochs, still rising there), so up to 60 epochs. skip_history: 11% of the draws outside a
    # window were items the user had (LearnBPR never draws them); seed 1, test HR@10 .361 -> .376,
    # best validation NDCG@10 .2038 -> .2088, still creeping up ~.001 an epoch when patience 3
    # ended it at epoch 31, so patience 5
    "ml-1m": {"hidden_size": 128, "l2_reg": 1.9e-3, "num_negatives": 4, "lr": 1.7e-3, "epochs": 60, "patience": 5,
              "skip_history": True},
    # Beauty's users have ~9 interactions, so one window and ~one step each an epoch: at lr 5e-3
    # and 50 epochs validation NDCG@10 still rose at the last epoch (3 seeds, test HR@10 .209)
    "beauty": {"hidden_size": 64, "l2_reg": 1e-3, "lr": 1e-2, "epochs": 150, "patience": 5},
    # 138k users: dense AdamW spent 117 of a step's 147 ms moving rows the batch never read
    # (scale benchmark, 2-core CPU); lazy updates keep the step's cost with the batch
    "ml-20m": {"sparse_updates": True},
    "steam": {"sparse_updates": True},
    "mind": {"hidden_size": 64, "batch_size": 512, "epochs": 10},
    "synthetic_seq": {"hidden_size": 32, "lr": 1e-2, "batch_size": 32, "max_len": 20, "epochs": 20,
                      "patience": 0},
}

SEARCH_SPACE = {
    "hidden_size": ("categorical", [16, 32, 64, 128, 256]),   # BERT4Rec §4.3
    "l2_reg": ("logfloat", 1e-5, 1e-1),
    "num_negatives": ("categorical", [1, 4, 16]),
    "lr": ("logfloat", 1e-4, 1e-2),
    "batch_size": ("categorical", [32, 64, 128, 256]),
}


class BPRMF(nn.Module):
    config_class = BPRMFConfig

    def __init__(self, config: BPRMFConfig, catalog: ItemCatalog):
        super().__init__()
        adopt_catalog(self, config, catalog)
        d = config.hidden_size
        sparse = config.sparse_updates
        self.user_embedding = nn.Embedding(check_users(catalog.n_users, "bpr_mf"), d, sparse=sparse)
        self.item_embedding = nn.Embedding(self.n_known + 2, d, padding_idx=PAD, sparse=sparse)   # pad, known, unknown
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=config.init_std)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()
        keep_history(self, catalog)

    def describe(self) -> dict:
        return item_coverage(self.n_known, self.n_items)

    def item_vectors(self) -> None:
        return None

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Mean BPR loss over (user, window item, sampled negative) triples."""
        rows = self.item_to_row[batch.seq]                                  # [B, M]
        user_index = batch_users(batch, "bpr_mf")
        users = self.user_embedding(user_index)[:, None]                    # [B, 1, d]
        negatives = uniform_rows(self.n_known, (*rows.shape, self.config.num_negatives), rows.device)
        keep = (rows != PAD)[..., None] & unseen(self, negatives, rows, user_index)   # [B, M, k]
        positive, negative = self.item_embedding(rows), self.item_embedding(negatives)
        x_ui = (users * positive).sum(-1)                                    # [B, M]
        x_uj = (users[:, :, None] * negative).sum(-1)                        # [B, M, k]
        ranking = F.softplus(x_uj - x_ui[..., None])                         # -ln sigma(x_ui - x_uj)
        norms = users.square().sum(-1)[..., None] + positive.square().sum(-1)[..., None] + negative.square().sum(-1)
        return masked_mean(ranking + self.config.l2_reg * norms, keep)

    def score(self, batch: SequenceBatch, item_vectors=None) -> torch.Tensor:
        """[B, n_items + 1]: <p_u, q_i> for every item; the input items are not read."""
        users = self.user_embedding(batch_users(batch, "bpr_mf"))
        return rows_to_items(float32_logits(users, self.item_embedding.weight[1:]), self.item_to_row)

    def score_items(self, batch: SequenceBatch, items: torch.Tensor, item_vectors=None) -> torch.Tensor:
        """[B, C]: <p_u, q_i> for the items [B, C] only (the sampled protocols' candidates)."""
        users = self.user_embedding(batch_users(batch, "bpr_mf"))
        return candidate_logits(users, self.item_embedding(self.item_to_row[items]))
