"""BERT4Rec: a bidirectional Transformer over item sequences trained with the cloze objective
(Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations
from Transformer", CIKM'19).

Training: a fraction ``mask_ratio`` of each sequence's real (non-padding) positions, at least
one, is replaced by [MASK] and predicted with a softmax over all items. The output layer is
BERT's: dense + GELU + LayerNorm, then the item embedding matrix (tied) plus a per-item bias.
Inference: [MASK] is appended to the last ``max_len - 1`` items and its prediction ranks the
next item.

Items that never occur in the training data (``training_item_counts(data) == 0``) share
one "unknown" embedding row: their vectors would never receive a gradient anyway, and on
MIND most candidate news are never clicked in training. ``describe()["coverage"]`` is the
fraction of items with a row of their own.

Presets (``PRESETS``) follow the paper: hidden 64, 2 layers, 2 heads, dropout 0.1,
lr 1e-3, batch 256; ML-1m max_len 200 / mask 0.2, Beauty max_len 50 / mask 0.6.

``STRONG_PRESETS`` follows Petrov & Macdonald ("A Systematic Review and Replicability Study
of BERT4Rec for Sequential Recommendation", RecSys'22): BERT4Rec's published ML-1m numbers
(sampled-pop100 HR@10 .697) are only reached when the model is trained far longer than most
re-implementations do; a larger model trained with larger batches for many more epochs
(early stopping with a long patience) gets there, and to full-ranking NDCG@10 >= .155, in
minutes on one modern GPU. Apply it with
``resolve("bert4rec", "ml-1m", STRONG_PRESETS["ml-1m"])`` or the equivalent ``--set`` flags.
These values are a recipe, not a measured result of this code.

The pieces under "shared pieces" (attention, blocks, the item -> embedding-row map, float32
output logits) are shared with ``recboard.models.sasrec``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recboard.datasets.batches import PAD, SequenceBatch

ATTENTION_IMPLS = ("sdpa", "eager")


@dataclass
class BERT4RecConfig:
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 200          # positions, [MASK] included at inference
    mask_ratio: float = 0.2     # fraction of real positions masked per training sequence
    dropout: float = 0.1        # hidden and attention-probability dropout
    ffn_size: int = 0           # feed-forward width; 0 = 4 * hidden_size (BERT)
    attention: str = "sdpa"     # sdpa (fused kernels) | eager (explicit softmax, for checking)


PRESETS = {
    "*": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "dropout": 0.1,
          "lr": 1e-3, "batch_size": 256, "weight_decay": 0.01, "epochs": 200, "patience": 20},
    "ml-1m": {"max_len": 200, "mask_ratio": 0.2, "epochs": 400, "patience": 40},
    "beauty": {"max_len": 50, "mask_ratio": 0.6, "epochs": 200, "patience": 20},
    # MIND click histories are short and the catalogue is large: a middle mask ratio
    "mind": {"max_len": 50, "mask_ratio": 0.4, "epochs": 30, "patience": 5},
    # clean planted transitions in short sequences: many masks, no dropout, a high lr
    # let the tiny model leave the cloze objective's initial plateau within a few epochs
    "synthetic_seq": {"max_len": 20, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                      "mask_ratio": 0.5, "dropout": 0.0, "lr": 1e-2, "batch_size": 64,
                      "weight_decay": 0.0, "epochs": 20, "patience": 0},
    "synthetic_mind": {"max_len": 50, "hidden_size": 32, "num_layers": 1, "mask_ratio": 0.4,
                       "epochs": 10, "patience": 3},
}

# Petrov & Macdonald-style long training of a larger model (see the module docstring).
STRONG_PRESETS = {
    "ml-1m": {"max_len": 200, "mask_ratio": 0.2, "hidden_size": 256, "num_heads": 4, "num_layers": 2,
              "dropout": 0.2, "batch_size": 512, "lr": 1e-3, "weight_decay": 0.01,
              "epochs": 1500, "patience": 150},
    "beauty": {"max_len": 50, "mask_ratio": 0.6, "hidden_size": 256, "num_heads": 4, "num_layers": 2,
               "dropout": 0.3, "batch_size": 512, "lr": 1e-3, "weight_decay": 0.01,
               "epochs": 600, "patience": 60},
}

SEARCH_SPACE = {
    "mask_ratio": ("float", 0.1, 0.9),
    "hidden_size": ("categorical", [32, 64, 128, 256]),
    "num_layers": ("int", 1, 4),
    "num_heads": ("categorical", [1, 2, 4]),
    "dropout": ("float", 0.0, 0.5),
    "lr": ("logfloat", 1e-4, 1e-2),
    "weight_decay": ("float", 0.0, 0.1),
    "batch_size": ("categorical", [64, 128, 256, 512]),
}


# ----------------------------------------------------------------------- shared pieces

def check_config(config, model_name: str) -> None:
    """Config values that would otherwise fail deep inside torch, reported by key."""
    def bad(key, expected):
        raise ValueError(f"{model_name} config key {key!r} must be {expected}, got {getattr(config, key)!r}")
    for key in ("hidden_size", "num_layers", "num_heads"):
        if getattr(config, key) < 1:
            bad(key, "a positive integer")
    if config.hidden_size % config.num_heads:
        raise ValueError(f"{model_name} config key 'hidden_size' ({config.hidden_size}) must be divisible "
                         f"by 'num_heads' ({config.num_heads})")
    if config.max_len < 2:
        bad("max_len", ">= 2")
    if not 0.0 <= config.dropout < 1.0:
        bad("dropout", "in [0, 1)")
    if config.ffn_size < 0:
        bad("ffn_size", ">= 0 (0 = default width)")
    if config.attention not in ATTENTION_IMPLS:
        bad("attention", f"one of {', '.join(ATTENTION_IMPLS)}")


def training_item_counts(data) -> np.ndarray:
    """Interactions per item in what the model trains on ([n_items + 1]).

    ``SequenceData``: its training part. ``NewsData``: the click sequences the runner trains
    sequence models on (history + train clicks), not ``NewsData.train_item_counts()``, which
    counts train-impression clicks only and would leave every history-only news unknown.
    """
    if hasattr(data, "click_sequences"):
        from recboard.benchmarks.evaluation import training_sequences
        counts = np.zeros(data.n_items + 1, dtype=np.int64)
        for seq in training_sequences(data):
            np.add.at(counts, np.asarray(seq, dtype=np.int64), 1)
        counts[PAD] = 0
        return counts
    return np.asarray(data.train_item_counts())


def item_rows(counts: np.ndarray) -> tuple[torch.Tensor, int]:
    """(item index -> embedding row [n_items + 1], number of known items K).

    Padding is row 0, items seen in training get rows 1..K in index order, and every unseen
    item shares row K + 1.
    """
    known = np.asarray(counts) > 0
    known[PAD] = False
    n_known = int(known.sum())
    rows = np.full(len(counts), n_known + 1, dtype=np.int64)
    rows[known] = np.arange(1, n_known + 1)
    rows[PAD] = PAD
    return torch.from_numpy(rows), n_known


def item_coverage(n_known: int, n_items: int) -> dict:
    """``describe()`` of a model with an ``item_rows`` map: the fraction of items with a row of their own."""
    return {"coverage": n_known / max(n_items, 1), "known_items": n_known, "unknown_items": n_items - n_known}


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) truncated, zero biases, padding row zero."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SelfAttention(nn.Module):
    """Multi-head self-attention. ``mask`` is boolean, broadcastable to [B, heads, L, L],
    True where a query may attend to a key; every query must be allowed at least one key."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, attention: str):
        super().__init__()
        self.num_heads, self.dropout, self.attention = num_heads, dropout, attention
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = F.dropout(att, p, self.training) @ v
        return self.out(y.transpose(1, 2).reshape(B, L, H))


class TransformerBlock(nn.Module):
    """Attention + feed-forward with residuals; post-LayerNorm (BERT) or pre-LayerNorm
    (``norm_first``, SASRec: more stable at higher learning rates)."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_size: int, dropout: float, attention: str,
                 norm_first: bool = False, activation: type = nn.GELU):
        super().__init__()
        self.norm_first = norm_first
        self.attn = SelfAttention(hidden_size, num_heads, dropout, attention)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, ffn_size), activation(), nn.Linear(ffn_size, hidden_size))
        self.norm1, self.norm2 = nn.LayerNorm(hidden_size), nn.LayerNorm(hidden_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), mask))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


def float32_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``hidden @ weight.T (+ bias)`` outside autocast: bf16 logits over thousands of items
    would tie many scores and make the softmax coarse."""
    with torch.autocast(hidden.device.type, enabled=False):
        logits = hidden.float() @ weight.float().T
        return logits if bias is None else logits + bias.float()


def rows_to_items(row_scores: torch.Tensor, item_to_row: torch.Tensor) -> torch.Tensor:
    """Scores over output rows (known items, then the shared unknown row) -> [B, n_items + 1]
    scores by item index, padding column -inf."""
    scores = row_scores.index_select(1, (item_to_row - 1).clamp(min=0))
    scores[:, PAD] = float("-inf")
    return scores


# ----------------------------------------------------------------------- the model

class BERT4Rec(nn.Module):
    config_class = BERT4RecConfig
    tasks = {"sequence"}

    def __init__(self, config: BERT4RecConfig, data):
        super().__init__()
        check_config(config, "bert4rec")
        if not 0.0 < config.mask_ratio < 1.0:
            raise ValueError(f"bert4rec config key 'mask_ratio' must be in (0, 1), got {config.mask_ratio!r}")
        self.config = config
        self.n_items = int(data.n_items)
        item_to_row, self.n_known = item_rows(training_item_counts(data))
        # persistent so a checkpoint carries the item -> row map it was trained with
        self.register_buffer("item_to_row", item_to_row)
        self.unknown_row = self.n_known + 1
        self.mask_row = self.n_known + 2
        H = config.hidden_size
        self.item_embedding = nn.Embedding(self.n_known + 3, H, padding_idx=PAD)
        self.position_embedding = nn.Embedding(config.max_len, H)
        self.embedding_norm = nn.LayerNorm(H)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(H, config.num_heads, config.ffn_size or 4 * H, config.dropout, config.attention)
            for _ in range(config.num_layers))
        self.head_dense = nn.Linear(H, H)
        self.head_norm = nn.LayerNorm(H)
        self.output_bias = nn.Parameter(torch.zeros(self.n_known + 1))  # known rows + unknown row
        self.apply(init_weights)

    def describe(self) -> dict:
        return item_coverage(self.n_known, self.n_items)

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """[B, L] embedding rows, left-padded, L <= max_len -> [B, L, H]. Positions are
        right-aligned, so the most recent position always has the same embedding."""
        B, L = rows.shape
        max_len = self.config.max_len
        positions = torch.arange(max_len - L, max_len, device=rows.device)
        x = self.item_embedding(rows) + self.position_embedding(positions)
        x = self.embedding_dropout(self.embedding_norm(x))
        keys = rows != PAD
        keys[:, -1] = True  # an all-padding row would otherwise attend to nothing (NaN)
        mask = keys[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return x

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, H] -> float32 [N, n_known + 1] (own rows, then the shared unknown row)."""
        h = self.head_norm(F.gelu(self.head_dense(hidden)))
        return float32_logits(h, self.item_embedding.weight[1:self.unknown_row + 1], self.output_bias)

    def mask_positions(self, seq: torch.Tensor) -> torch.Tensor:
        """Bool [B, L]: round(mask_ratio * n) of each row's n real positions (at least one,
        never padding), chosen uniformly at random."""
        real = seq != PAD
        n = real.sum(dim=1)
        k = torch.minimum((n.float() * self.config.mask_ratio).round().long().clamp(min=1), n)
        keys = torch.rand(seq.shape, device=seq.device).masked_fill(~real, 2.0)
        rank = keys.argsort(dim=1).argsort(dim=1)
        return rank < k[:, None]

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        seq = batch.seq[:, -self.config.max_len:]
        rows = self.item_to_row[seq]
        masked = self.mask_positions(seq)
        hidden = self.encode(rows.masked_fill(masked, self.mask_row))
        picked = hidden[masked]
        if picked.size(0) == 0:  # a batch of empty sequences: nothing to predict
            return hidden.sum() * 0.0
        return F.cross_entropy(self.output_logits(picked), rows[masked] - 1)

    def score(self, batch: SequenceBatch, item_vectors=None) -> torch.Tensor:
        """[B, n_items + 1] scores for the item after ``batch.seq``: the prediction at a
        [MASK] appended to the last ``max_len - 1`` items."""
        rows = self.item_to_row[batch.seq[:, -(self.config.max_len - 1):]]
        mask_column = torch.full((rows.size(0), 1), self.mask_row, dtype=rows.dtype, device=rows.device)
        hidden = self.encode(torch.cat([rows, mask_column], dim=1))[:, -1]
        return rows_to_items(self.output_logits(hidden), self.item_to_row)
