"""SASRec: causal self-attention over item sequences (Kang & McAuley, "Self-Attentive
Sequential Recommendation", ICDM'18), trained the way Klenitskiy & Vasilev ("Turning Dross
Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys'23) show works best:
every position predicts the next item with a full softmax cross-entropy over all items
instead of the original one-negative binary cross-entropy. They report ML-1m full-ranking
NDCG@10 .1821 with hidden 64, 2 blocks, max_len 200.

``--preset sasrec+`` is their exact recipe (dropout 0.1, at most 100 epochs, patience 10);
the default presets keep the dropout and the longer training our measured runs used.

Architecture as in the original: item embeddings scaled by sqrt(hidden) plus learned
positions, pre-LayerNorm blocks with a point-wise feed-forward of the same width, a final
LayerNorm, and the item embedding matrix (tied) as the output layer. Items never seen in
training (``catalog.train_counts == 0``) share one "unknown" embedding row; that map, the
attention and the blocks are ``recboard.models.layers``, shared with BERT4Rec.
``loss_chunk`` > 0 computes that full softmax a chunk of positions at a time
(``layers.full_softmax_loss``): the same loss without all positions' logits over MIND-large's
~161k news in memory at once.

Text items (``--set item_encoder=glove|minilm|bert|distilbert|<HF name or dir>``): item
vectors come from ``recboard.models.item_tower`` -- the title through NRMS's news encoder,
plus an ID embedding if seen in training -- as inputs and tied output layer, so unseen news
get real scores; training then uses a sampled softmax over titles.
``describe()["variant"]`` is "<encoder> titles".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from recboard.datasets.batches import PAD, ItemCatalog, SequenceBatch
from recboard.models.checks import require, transformer_rules
from recboard.models.item_tower import TextItemConfig, TextItemTower, check_item_text
from recboard.models.layers import (IGNORE, TransformerBlock, adopt_catalog, float32_logits, full_softmax_loss,
                                    init_weights, item_coverage, rows_to_items, with_padding_column)


@dataclass
class SASRecConfig(TextItemConfig):   # + the text item tower's keys (item_encoder, ...: item_tower.py)
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 1
    max_len: int = 200          # window: max_len - 1 items in, the next one predicted
    dropout: float = 0.2        # hidden and attention-probability dropout
    ffn_size: int = 0           # feed-forward width; 0 = hidden_size (the original point-wise FFN)
    attention: str = "sdpa"     # sdpa (fused kernels) | eager (explicit softmax, for checking)
    loss_chunk: int = 0         # full-softmax loss over this many positions at a time; 0 = all at once

    def check(self) -> None:
        require("sasrec", self, [*transformer_rules(self), *self.text_rules()])


PRESETS = {
    "*": {"hidden_size": 64, "num_layers": 2, "num_heads": 1, "dropout": 0.2,
          "lr": 1e-3, "batch_size": 128, "weight_decay": 0.0, "epochs": 200, "patience": 20},
    "ml-1m": {"max_len": 200, "dropout": 0.2, "epochs": 300, "patience": 30},
    # sparse Amazon data: the original paper's stronger dropout
    "beauty": {"max_len": 50, "dropout": 0.5, "epochs": 200, "patience": 20},
    # BERT4Rec §4.3: N = 200 on ML-20m, 50 on Steam, for every model; larger data, fewer epochs
    # loss_chunk: the logits of a batch (128 x 200 positions x 26,744 items) would take 2.7 GB and
    # as much for their gradient; 4,096 positions at a time keep an epoch under 4 GB
    # (benchmarks/speed/scale.py: 5.7 GB peak without)
    "ml-20m": {"max_len": 200, "dropout": 0.2, "epochs": 100, "patience": 10, "loss_chunk": 4096},
    "steam": {"max_len": 50, "dropout": 0.2, "epochs": 100, "patience": 10},
    "mind": {"max_len": 50, "dropout": 0.2, "batch_size": 256, "epochs": 30, "patience": 5},
    "synthetic_seq": {"max_len": 20, "hidden_size": 32, "num_layers": 1, "num_heads": 1,
                      "dropout": 0.1, "lr": 3e-3, "batch_size": 64, "weight_decay": 0.0,
                      "epochs": 20, "patience": 0},
    # ~500 click sequences: batch 32 (16 steps an epoch) at lr 3e-3 peaks within ~10 epochs
    # (batch 128 at 1e-3 needed ~75) and then overfits, which patience 10 sees. Measured
    # (2-core CPU, seeds 1-3): best epoch 11-14, 12-15 s, test AUC .924 +- .003
    "synthetic_mind": {"max_len": 50, "hidden_size": 32, "num_layers": 1, "batch_size": 32, "lr": 3e-3,
                       "epochs": 200, "patience": 10},
    # as BERT4Rec's: small batches, a small title encoder (used with item_encoder set)
    "synthetic_mind_cold": {"max_len": 20, "batch_size": 32, "lr": 3e-3, "text_heads": 4, "text_head_dim": 8,
                            "text_query_dim": 32, "text_negatives": 256},
    # as BERT4Rec's: real titles, the title encoder at NRMS's size (the tower's defaults)
    "mind_titles_cold": {"max_len": 20, "text_negatives": 256},
}

NAMED_PRESETS = {
    # exactly what Klenitskiy & Vasilev trained for SASRec+ (github.com/antklen/sasrec-bert4rec-recsys23,
    # src/configs/SASRec.yaml; the rest equals PRESETS["*"]: hidden 64, 2 blocks, 1 head, batch 128,
    # lr 1e-3, no weight decay). Our defaults differ in dropout (0.2 on ML-1m, the original
    # paper's 0.5 on Beauty) and train longer with more patience.
    "sasrec+": {
        "*": {"dropout": 0.1, "epochs": 100, "patience": 10},
        "ml-1m": {"max_len": 200},
        "beauty": {"max_len": 50},
    },
}

SEARCH_SPACE = {
    "hidden_size": ("categorical", [32, 64, 128, 256]),
    "num_layers": ("int", 1, 4),
    "num_heads": ("categorical", [1, 2, 4]),
    "dropout": ("float", 0.0, 0.6),
    "lr": ("logfloat", 1e-4, 1e-2),
    "weight_decay": ("float", 0.0, 0.1),
    "batch_size": ("categorical", [64, 128, 256, 512]),
}


class SASRec(nn.Module):
    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig, catalog: ItemCatalog):
        super().__init__()
        adopt_catalog(self, config, catalog)
        check_item_text(config, catalog, "sasrec")
        self.unknown_row = self.n_known + 1
        # the runner's training windows are max_len long: max_len - 1 inputs and their next
        # items, so the model reads (and has position embeddings for) max_len - 1 items
        self.context = config.max_len - 1
        H = config.hidden_size
        text = bool(config.item_encoder.strip())
        # ID items: rows for pad, the known items and unknown; text items: the tower below
        self.item_embedding = None if text else nn.Embedding(self.n_known + 2, H, padding_idx=PAD)
        self.position_embedding = nn.Embedding(self.context, H)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(H, config.num_heads, config.ffn_size or H, config.dropout, config.attention,
                             norm_first=True, activation=nn.ReLU)
            for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(H)
        self.apply(init_weights)
        # built after init_weights, which would overwrite pretrained word vectors and PLM weights
        self.item_tower = TextItemTower(config, catalog, H, config.dropout, "sasrec") if text else None
        self.compiles = not text   # the tower's candidates have data-dependent shapes

    def describe(self) -> dict:
        return self.item_tower.describe() if self.item_tower else item_coverage(self.n_known, self.n_items)

    def item_vectors(self) -> torch.Tensor | None:
        """Text items: every title encoded once per evaluation. ID items: None, scoring reads
        the output layer directly."""
        return self.item_tower.all_items() if self.item_tower else None

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """[B, L] embedding rows (ID items), left-padded, L <= max_len - 1 -> [B, L, H]."""
        return self.contextualize(self.item_embedding(rows), rows != PAD)

    def contextualize(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """[B, L, H] item vectors, left-padded (``real`` False on padding), L <= max_len - 1
        -> [B, L, H]; position t sees positions <= t only. Positions are right-aligned (the
        newest item is always last)."""
        B, L, _ = x.shape
        positions = torch.arange(self.context - L, self.context, device=x.device)
        x = x * math.sqrt(self.config.hidden_size) + self.position_embedding(positions)
        x = self.embedding_dropout(x)
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        diagonal = torch.eye(L, dtype=torch.bool, device=x.device)
        # real keys in the past; padding queries see only themselves so no row is all-masked
        mask = causal & (real[:, None, None, :] | diagonal)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """ID items: [N, H] -> float32 [N, n_known + 1] (own rows, then the shared unknown row)."""
        return float32_logits(hidden, self.item_embedding.weight[1:self.unknown_row + 1])

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Full-softmax cross-entropy of every next item given the items before it (text
        items: a sampled softmax over titles, see the tower). Every position goes into the
        loss, padding ones with an ``IGNORE`` target, so no shape depends on the data."""
        seq = batch.seq[:, -self.config.max_len:]
        # left padding: a real input position is always followed by a real target
        predict = seq[:, :-1] != PAD
        if self.item_tower is None:
            rows = self.item_to_row[seq]
            hidden = self.encode(rows[:, :-1])
            candidates, targets = self.item_embedding.weight[1:self.unknown_row + 1], rows[:, 1:] - 1
        else:   # the tower's candidates depend on the batch (torch.unique): no static shapes here
            inputs, candidates, columns = self.item_tower.training_vectors(seq[:, :-1], seq[:, 1:][predict])
            hidden = self.contextualize(inputs, predict)
            targets = torch.full_like(predict, IGNORE, dtype=torch.long).masked_scatter(predict, columns)
        targets = targets.masked_fill(~predict, IGNORE)
        return full_softmax_loss(hidden.flatten(0, 1), candidates, None, targets.flatten(), self.config.loss_chunk)

    def score(self, batch: SequenceBatch, item_vectors=None) -> torch.Tensor:
        """[B, n_items + 1] scores for the item after the last ``max_len - 1`` items of ``batch.seq``."""
        seq = batch.seq[:, -self.context:]
        if self.item_tower is None:
            rows = self.item_to_row[seq]
            return rows_to_items(self.output_logits(self.encode(rows)[:, -1]), self.item_to_row)
        vectors = self.item_tower.all_items() if item_vectors is None else item_vectors
        hidden = self.contextualize(vectors[seq], seq != PAD)[:, -1]
        return with_padding_column(float32_logits(hidden, vectors))
