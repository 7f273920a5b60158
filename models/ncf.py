"""NCF: NeuMF, the fusion of generalised matrix factorisation (GMF) and an MLP over user
and item embeddings (He et al., "Neural Collaborative Filtering", WWW'17), a Table 2
baseline of the BERT4Rec paper, which ran the authors' code (§4.3). The recipe is that
code's, github.com/hexiangnan/neural_collaborative_filtering ``NeuMF.py``:

* GMF: p_u * q_i (``hidden_size`` = the predictive factors, ``--num_factors 8``);
* MLP: [p'_u, q'_i] through a halving ReLU tower (``--layers [64,32,16,8]``: embeddings of
  4 * factors each, then 4, 2, 1 times the factors);
* prediction: one linear unit over [GMF, MLP] and a sigmoid, trained with binary
  cross-entropy on every positive and ``num_negatives`` (``--num_neg 4``) sampled items,
  averaged over all of them; Adam, lr 1e-3;
* init: embeddings N(0, 0.01), the tower Glorot-uniform, the prediction unit LeCun-uniform.

The paper's best NeuMF initialises from pretrained GMF and MLP models; ``NeuMF.py`` trains
from scratch unless given them, and so does this one. Positives are every item of the
user's training window; negatives are drawn uniformly from the known items the window does
not hold, or, with ``skip_history``, that the user's whole training part does not hold (the
original: from all of the user's non-items, see ``negatives.py``).

Validation and test, the same for every baseline here: the model trains on each user's
items but the last two; validation predicts item n-1 from the items before it; test
predicts item n from all items before it. The validation item is then input and masked
from the full ranking as seen, but never trained on. NCF reads only the user index
(``batch.user``), not the input items, so the validation item does not change its test
scores.

Scoring all items runs the MLP on every (user, item) pair; the first layer is split into a
user part and an item part computed once, and items go through in chunks
(``score_chunk`` pairs' activations at a time) so memory stays flat.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recboard.datasets.batches import PAD, ItemCatalog, SequenceBatch
from recboard.models.checks import require
from recboard.models.layers import adopt_catalog, item_coverage, rows_to_items
from recboard.models.negatives import (batch_users, check_users, glorot_uniform_, keep_history, masked_mean, uniform_rows,
                                       unseen)


@dataclass
class NCFConfig:
    hidden_size: int = 8          # predictive factors: GMF width and the tower's last layer (NeuMF.py --num_factors 8)
    mlp_layers: int = 3           # ReLU tower layers, halving from 4 * hidden_size (NeuMF.py --layers [64,32,16,8])
    num_negatives: int = 4        # sampled negatives per positive (NeuMF.py --num_neg 4)
    score_chunk: int = 1 << 22    # (user, item) pairs whose tower activations exist at once when scoring
    skip_history: bool = False    # negatives skip all the user's training items, not only the window's (negatives.py)

    def check(self) -> None:
        require("ncf", self, [
            ("hidden_size", self.hidden_size >= 1, "a positive integer"),
            ("mlp_layers", self.mlp_layers >= 1, "a positive integer"),
            ("num_negatives", self.num_negatives >= 1, "a positive integer"),
            ("score_chunk", self.score_chunk >= 1, "a positive integer"),
        ])


PRESETS = {
    # NeuMF.py: Adam lr 1e-3, 8 predictive factors, no regularisation (--reg_mf 0, --reg_layers
    # [0,0,0,0]); BERT4Rec §4.3 tunes d in {16..256}, here NCF's predictive factors. Windows of
    # one item, one per start (window_step 1): every training interaction once an epoch, as
    # NeuMF.py's instances. Its batches are 256 instances (~51 positives); ours 1024 positives
    # (and 4096 negatives) at lr 2e-3, or ML-1m's epoch would take 20k steps on a CPU.
    # Scoring all items runs the tower on every pair: ~14 s per ML-1m split on a 2-core CPU,
    # 200-570 s per Beauty split; the sampled protocols score only the 101 candidates (<1 s).
    "*": {"hidden_size": 8, "lr": 2e-3, "batch_size": 1024, "max_len": 1, "window_step": 1,
          "weight_decay": 0.0, "epochs": 8, "patience": 2},
    # measured (sampled-pop100, 2-core CPU, seeds 1-3): 8 epochs ended with validation NDCG@10
    # still rising (best epoch 7-8, test HR@10 .333); early stopping decides instead.
    # skip_history: with windows of one item, 11% of the draws were items the user had, which
    # NeuMF.py never draws (3 seeds: test HR@10 .353 -> .363). 16 predictive factors, the
    # least of BERT4Rec's d in {16..256} (seed 1, with skip_history): best validation NDCG@10
    # .191 -> .205, test HR@10 .368 -> .384, 3.7 minutes; 32 not tried (~5x the epoch time on Beauty)
    "ml-1m": {"hidden_size": 16, "epochs": 40, "patience": 3, "skip_history": True},
    # 20 epochs ended still improving on Beauty (best epoch 19 of 20, seed 1); measured with
    # these (sampled-pop100, seeds 1-3): best epochs 25, 20, 22, 3.5-5.7 min a run
    "beauty": {"hidden_size": 8, "epochs": 80, "patience": 3},
    "mind": {"hidden_size": 8, "epochs": 5},
    "synthetic_seq": {"hidden_size": 16, "lr": 1e-2, "batch_size": 32, "max_len": 20, "window_step": 0,
                      "epochs": 20, "patience": 0},
}

SEARCH_SPACE = {
    "hidden_size": ("categorical", [8, 16, 32, 64]),     # the NCF paper's predictive factors
    "mlp_layers": ("int", 1, 4),
    "num_negatives": ("int", 1, 10),                      # the NCF paper's Figure 7 range
    "lr": ("logfloat", 1e-4, 1e-2),
    "weight_decay": ("float", 0.0, 0.1),
    "batch_size": ("categorical", [16, 32, 64, 128]),
}


class NCF(nn.Module):
    config_class = NCFConfig

    def __init__(self, config: NCFConfig, catalog: ItemCatalog):
        super().__init__()
        adopt_catalog(self, config, catalog)
        n_users, n_rows = check_users(catalog.n_users, "ncf"), self.n_known + 2   # pad, known, unknown
        factors = config.hidden_size
        widths = [factors * 2 ** (config.mlp_layers - 1 - i) for i in range(config.mlp_layers)]
        self.gmf_user, self.gmf_item = nn.Embedding(n_users, factors), nn.Embedding(n_rows, factors)
        self.mlp_user, self.mlp_item = nn.Embedding(n_users, widths[0]), nn.Embedding(n_rows, widths[0])
        # the tower's first layer on [p'_u, q'_i], split in its user and item halves
        self.first_user = nn.Linear(widths[0], widths[0], bias=False)
        self.first_item = nn.Linear(widths[0], widths[0])
        self.tower = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.prediction = nn.Linear(2 * factors, 1)
        self.reset_parameters(widths[0])
        keep_history(self, catalog)

    def reset_parameters(self, width: int) -> None:
        """NeuMF.py's initialisers (Keras): see the module docstring."""
        for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(table.weight, std=0.01)
        for half in (self.first_user, self.first_item):   # halves of one Glorot-initialised [2w, w] kernel
            glorot_uniform_(half.weight, 2 * width, width)
        for layer in self.tower:
            glorot_uniform_(layer.weight, layer.in_features, layer.out_features)
        for layer in (self.first_item, *self.tower):
            nn.init.zeros_(layer.bias)
        bound = math.sqrt(3.0 / self.prediction.in_features)   # LeCun uniform
        nn.init.uniform_(self.prediction.weight, -bound, bound)
        nn.init.zeros_(self.prediction.bias)

    def describe(self) -> dict:
        return item_coverage(self.n_known, self.n_items)

    def item_vectors(self) -> None:
        return None

    def logits(self, users: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid NeuMF output for users [B] and item rows [B, N] (or [1, N], the same
        items for every user) -> [B, N]."""
        gmf = self.gmf_user(users)[:, None] * self.gmf_item(rows)
        hidden = F.relu(self.first_user(self.mlp_user(users))[:, None] + self.first_item(self.mlp_item(rows)))
        for layer in self.tower:
            hidden = F.relu(layer(hidden))
        return self.prediction(torch.cat([gmf, hidden], -1)).squeeze(-1)

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Binary cross-entropy over every window item (label 1) and its sampled negatives
        (label 0), one mean over all of them as in NeuMF.py."""
        users = batch_users(batch, "ncf")
        rows = self.item_to_row[batch.seq]                                              # [B, M]
        negatives = uniform_rows(self.n_known, (len(rows), rows.size(1) * self.config.num_negatives), rows.device)
        keep = torch.cat([rows != PAD, unseen(self, negatives, rows, users)], 1)
        # NeuMF.py keeps the negatives of each positive; a padding slot's draws go too
        keep[:, rows.size(1):] &= (rows != PAD).repeat_interleave(self.config.num_negatives, 1)
        logits = self.logits(users, torch.cat([rows, negatives], 1))
        labels = torch.zeros_like(logits)
        labels[:, :rows.size(1)] = 1
        return masked_mean(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"), keep)

    def score(self, batch: SequenceBatch, item_vectors=None) -> torch.Tensor:
        """[B, n_items + 1] pre-sigmoid scores of every item; the input items are not read."""
        users = batch_users(batch, "ncf")
        all_rows = torch.arange(1, self.n_known + 2, device=users.device)[None]   # known rows, then unknown
        chunk = max(1, self.config.score_chunk // (len(users) * self.first_item.out_features))
        scores = torch.cat([self.logits(users, all_rows[:, s:s + chunk]) for s in range(0, all_rows.size(1), chunk)], 1)
        return rows_to_items(scores.float(), self.item_to_row)

    def score_items(self, batch: SequenceBatch, items: torch.Tensor, item_vectors=None) -> torch.Tensor:
        """[B, C] pre-sigmoid scores of the items [B, C] only (the sampled protocols' candidates):
        101 tower passes a user where ``score`` makes one per item (200-570 s a Beauty split)."""
        return self.logits(batch_users(batch, "ncf"), self.item_to_row[items]).float()
