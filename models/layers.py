"""Transformer pieces shared by the sequence models (``bert4rec.py``, ``sasrec.py``).

* ``SelfAttention`` / ``TransformerBlock``: multi-head attention with a boolean mask, run by
  ``scaled_dot_product_attention`` ("sdpa", fused kernels) or an explicit softmax ("eager",
  to check the fused path against); post-LayerNorm (BERT) or pre-LayerNorm (SASRec) blocks.
* ``item_rows`` / ``item_coverage``: items never seen in training share one "unknown"
  embedding row. Their vectors would never receive a gradient anyway, and on MIND most
  candidate news are never clicked in training, so this keeps the tables small.
* ``float32_logits`` / ``rows_to_items`` / ``with_padding_column``: the output layer over all
  items, in float32, mapped back from embedding rows to item indices.
* ``full_softmax_loss``: cross-entropy over all items, optionally ``loss_chunk`` rows at a
  time so the [N, n_items] logits never exist at once (MIND-large: ~161k news). Rows whose
  target is ``IGNORE`` are left out, so a model can hand it a fixed number of rows per batch
  (static shapes: no host sync, one ``torch.compile`` graph).
* ``init_weights`` (BERT's); ``adopt_catalog`` (how every ID model starts) and
  ``CountedModel`` (the contract of models that are counted, not trained).

The models' parameter names come from here, so renaming an attribute breaks old checkpoints.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from recboard.datasets.batches import PAD

IGNORE = -100   # a target left out of the loss (cross_entropy's default ignore_index)


def adopt_catalog(model: nn.Module, config, catalog) -> None:
    """How every ID model starts: its checked config, the item count, and the item -> embedding
    row map (``item_rows``) as a persistent buffer, so a checkpoint carries the map it was
    trained with. Sets ``model.config``, ``n_items``, ``n_known`` and ``item_to_row``."""
    config.check()
    model.config = config
    model.n_items = int(catalog.n_items)
    item_to_row, model.n_known = item_rows(catalog.train_counts)
    model.register_buffer("item_to_row", item_to_row)


class CountedModel(nn.Module):
    """A model that is counted or drawn, not trained (``pop``, ``random``): no loss, nothing
    to pre-encode, nothing to describe."""

    def loss(self, batch):
        raise RuntimeError(f"{type(self).__name__} is not trained: it has no loss")

    def item_vectors(self) -> None:
        return None

    def describe(self) -> dict:
        return {}


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
    (``norm_first``, SASRec: more stable at higher learning rates).

    ``feed_forward``, ``layer_norm`` and ``residual`` False take that part out of the block:
    the BERT4Rec paper's ablations (w/o PFFN, w/o LN, w/o RC; §4.8)."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_size: int, dropout: float, attention: str,
                 norm_first: bool = False, activation: type = nn.GELU, attention_dropout: float | None = None,
                 feed_forward: bool = True, layer_norm: bool = True, residual: bool = True):
        super().__init__()
        self.norm_first, self.residual = norm_first, residual
        # BERT's attention_probs_dropout_prob, when it differs from the hidden dropout
        self.attn = SelfAttention(hidden_size, num_heads, dropout if attention_dropout is None else attention_dropout,
                                  attention)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, ffn_size), activation(),
                                 nn.Linear(ffn_size, hidden_size)) if feed_forward else None
        norm = nn.LayerNorm if layer_norm else (lambda _: nn.Identity())
        self.norm1, self.norm2 = norm(hidden_size), norm(hidden_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.sublayer(x, lambda h: self.attn(h, mask), self.norm1)
        return x if self.ffn is None else self.sublayer(x, self.ffn, self.norm2)

    def sublayer(self, x: torch.Tensor, layer, norm: nn.Module) -> torch.Tensor:
        skip = x if self.residual else 0
        if self.norm_first:
            return skip + self.drop(layer(norm(x)))
        return norm(skip + self.drop(layer(x)))


def float32_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``hidden @ weight.T (+ bias)`` outside autocast: bf16 logits over thousands of items
    would tie many scores and make the softmax coarse."""
    with torch.autocast(hidden.device.type, enabled=False):
        logits = hidden.float() @ weight.float().T
        return logits if bias is None else logits + bias.float()


def candidate_logits(hidden: torch.Tensor, vectors: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``float32_logits`` against each row's own candidates: hidden [B, d], their vectors
    [B, C, d] (and biases [B, C]) -> [B, C]. The sampled protocols rank 101 candidates a user;
    this costs 101 dot products where the full product costs one per item (54,542 on Beauty)."""
    with torch.autocast(hidden.device.type, enabled=False):
        logits = (vectors.float() @ hidden.float()[:, :, None]).squeeze(-1)
        return logits if bias is None else logits + bias.float()


def rows_to_items(row_scores: torch.Tensor, item_to_row: torch.Tensor) -> torch.Tensor:
    """Scores over output rows (known items, then the shared unknown row) -> [B, n_items + 1]
    scores by item index, padding column -inf."""
    return with_padding_column(row_scores.index_select(1, (item_to_row - 1).clamp(min=0)))


def with_padding_column(scores: torch.Tensor) -> torch.Tensor:
    """[B, n_items + 1] scores by item index with the padding column set to -inf (in place)."""
    scores[:, PAD] = float("-inf")
    return scores


def _summed_cross_entropy(hidden, weight, bias, targets):
    return F.cross_entropy(float32_logits(hidden, weight, bias), targets, ignore_index=IGNORE, reduction="sum")


def drops_ignored_rows() -> bool:
    """Whether ``full_softmax_loss`` drops the ``IGNORE`` rows before the output layer: when
    run eagerly, not inside a compiled graph (static shapes)."""
    return not torch.compiler.is_compiling()


def full_softmax_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      targets: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T (+ bias)`` against ``targets`` over all rows
    of ``weight``, over the rows of ``hidden`` whose target is not ``IGNORE`` (0 if none).

    The caller passes every slot of a batch, padding included. Under ``torch.compile`` all of
    them go through the output layer: no shape depends on the data, nothing waits for the
    device, and one graph serves every batch of that shape. Run eagerly, the ignored rows are
    dropped first (one host sync): on ML-1m windows 44% of SASRec's positions are padding,
    and on short MIND click histories with ~161k news the wasted logits would dominate.

    ``chunk`` > 0: ``chunk`` rows of ``hidden`` at a time, each under activation
    checkpointing, so only one chunk's [chunk, n_items] float32 logits (and in backward their
    gradient) exist at any moment instead of all N rows' -- at MIND-large's ~161k news and
    12k predicted positions per batch that is ~8 GB. The price is one more logits matmul per
    chunk in backward. Row chunks rather than an online logsumexp over item chunks: each
    row's softmax is computed exactly as unchunked (same kernel, same float32 logits), so
    the loss differs only by the order of the final sum, and autograd needs no custom
    backward.
    """
    if drops_ignored_rows():
        kept = targets != IGNORE
        hidden, targets = hidden[kept], targets[kept]
    n = hidden.size(0)
    if chunk <= 0 or n <= chunk:
        total = _summed_cross_entropy(hidden, weight, bias, targets)
    else:
        total = sum(checkpoint(_summed_cross_entropy, hidden[s:s + chunk], weight, bias, targets[s:s + chunk],
                               use_reentrant=False)
                    for s in range(0, n, chunk))
    return total / (targets != IGNORE).sum().clamp(min=1)
