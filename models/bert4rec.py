"""BERT4Rec: a bidirectional Transformer over item sequences trained with the cloze objective
(Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations
from Transformer", CIKM'19).

Training: a fraction ``mask_ratio`` of each sequence's real (non-padding) positions, at least
one, is replaced by [MASK] and predicted with a softmax over all items. The output layer is
BERT's: dense + GELU + LayerNorm, then the item embedding matrix (tied) plus a per-item bias.
Every row of a batch fills the same number of prediction slots (``mask_positions``), so no
training shape depends on the data and ``--set compile=...`` can capture the step.
Inference: [MASK] is appended to the last ``max_len - 1`` items and its prediction ranks the
next item.

Items that never occur in what the model trains on (``catalog.train_counts == 0``) share
one "unknown" embedding row: their vectors would never receive a gradient anyway, and on
MIND most candidate news are never clicked in training. ``describe()["coverage"]`` is the
fraction of items with a row of their own.

Text items (``--set item_encoder=glove|minilm|bert|distilbert|<HF name or dir>``): item
vectors come from ``recboard.models.item_tower`` instead -- the item's title through NRMS's
news encoder, plus an ID embedding if it was seen in training -- as inputs and as the tied
output layer, so unseen news get real scores. [MASK] is then a learned vector, there is no
per-item output bias, and training uses a sampled softmax (see the tower).
``describe()["variant"]`` is "<encoder> titles", which keeps text rows apart on the leaderboard.

Presets (``PRESETS``) follow the paper: hidden 64, 2 layers, 2 heads, dropout 0.1,
lr 1e-3, batch 256; ML-1m max_len 200 / mask 0.2, Beauty max_len 50 / mask 0.6.

``NAMED_PRESETS["strong"]`` follows Petrov & Macdonald ("A Systematic Review and
Replicability Study of BERT4Rec for Sequential Recommendation", RecSys'22): BERT4Rec's
published ML-1m numbers (sampled-pop100 HR@10 .697) are only reached when the model is
trained far longer than most re-implementations do; a larger model trained with larger
batches for many more epochs (early stopping with a long patience) gets there, and to
full-ranking NDCG@10 >= .155, in minutes on one modern GPU. Apply it with
``bench run --model bert4rec --dataset ml-1m --preset strong``. These values are a recipe,
not a measured result of this code.

``NAMED_PRESETS["original"]`` is the original TensorFlow code's recipe (commented there):
lr 1e-4 with warmup and linear decay (``lr_schedule``), overlapping windows
(``window_step``), last-item-only training rows (``last_item_fraction``), separate
``attention_dropout``, 400k steps. Also a recipe, not yet a measured result of this code.

Ablations (the paper's §4.8): ``position_embedding``, ``feed_forward``, ``layer_norm`` and
``residual`` set to false remove that part (w/o PE, PFFN, LN, RC; ``ABLATIONS``), and the
run is its own leaderboard row (``describe()["variant"]``) beside the full model, gathered
in the ablation table by ``recboard.leaderboard.ablation``; w/o Dropout is ``dropout=0``.

Attention, Transformer blocks, the item -> embedding-row map and the float32 output logits
live in ``recboard.models.layers``, shared with ``recboard.models.sasrec``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recboard.datasets.batches import PAD, ItemCatalog, SequenceBatch
from recboard.models.checks import is_fraction, require, transformer_rules
from recboard.models.item_tower import TextItemConfig, TextItemTower, check_item_text
from recboard.models.layers import (IGNORE, TransformerBlock, adopt_catalog, float32_logits, full_softmax_loss,
                                    init_weights, item_coverage, rows_to_items, with_padding_column)


@dataclass
class BERT4RecConfig(TextItemConfig):   # + the text item tower's keys (item_encoder, ...: item_tower.py)
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 200          # positions, [MASK] included at inference
    mask_ratio: float = 0.2     # fraction of real positions masked per training sequence
    dropout: float = 0.1        # hidden dropout, and attention-probability dropout unless the next key is set
    attention_dropout: float | None = None   # attention-probability dropout; None = dropout
    last_item_fraction: float = 0.0   # training rows that mask only their last item (the original code: 1/11)
    ffn_size: int = 0           # feed-forward width; 0 = 4 * hidden_size (BERT)
    attention: str = "sdpa"     # sdpa (fused kernels) | eager (explicit softmax, for checking)
    loss_chunk: int = 0         # full-softmax loss over this many positions at a time; 0 = all at once
    # the paper's ablations (§4.8); each False is its own leaderboard row ("w/o PE", ...)
    position_embedding: bool = True   # learned positions added to the items
    feed_forward: bool = True         # the position-wise feed-forward sub-layer (PFFN)
    layer_norm: bool = True           # LayerNorm after the embeddings and each sub-layer (LN)
    residual: bool = True             # the residual connection around each sub-layer (RC)

    def check(self) -> None:
        require("bert4rec", self, [
            *transformer_rules(self), *self.text_rules(),
            ("mask_ratio", 0.0 < self.mask_ratio < 1.0, "in (0, 1)"),
            ("attention_dropout", self.attention_dropout is None or is_fraction(self.attention_dropout),
             "in [0, 1) or none"),
            ("last_item_fraction", is_fraction(self.last_item_fraction, one_allowed=True), "in [0, 1]")])


PRESETS = {
    "*": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "dropout": 0.1,
          "lr": 1e-3, "batch_size": 256, "weight_decay": 0.01, "epochs": 200, "patience": 20},
    "ml-1m": {"max_len": 200, "mask_ratio": 0.2, "epochs": 400, "patience": 40},
    "beauty": {"max_len": 50, "mask_ratio": 0.6, "epochs": 200, "patience": 20},
    # the paper's §4.3 (N 200 / 50) and §4.6 (mask 0.2 on ML-20m, 0.4 on Steam). An epoch of
    # either holds 20-45x ML-1m's windows, so fewer epochs and a shorter patience (in
    # evaluations, each a full ranking over 138k / 281k users); not yet measured here
    "ml-20m": {"max_len": 200, "mask_ratio": 0.2, "epochs": 100, "patience": 10, "loss_chunk": 4096},   # as SASRec's
    "steam": {"max_len": 50, "mask_ratio": 0.4, "epochs": 100, "patience": 10},
    # MIND click histories are short and the catalogue is large: a middle mask ratio
    "mind": {"max_len": 50, "mask_ratio": 0.4, "epochs": 30, "patience": 5},
    # clean planted transitions in short sequences: many masks, no dropout, a high lr
    # let the tiny model leave the cloze objective's initial plateau within a few epochs
    # measured (2-core CPU, seeds 1-3): 20 epochs ended still improving (test NDCG@10 .366);
    # validation levels off near epoch 100-150 (.59), ~20 s, so patience decides
    "synthetic_seq": {"max_len": 20, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                      "mask_ratio": 0.5, "dropout": 0.0, "lr": 1e-2, "batch_size": 64,
                      "weight_decay": 0.0, "epochs": 300, "patience": 10},
    # ~500 click sequences: one window each gave ~18 masked targets an epoch where SASRec gets
    # ~44, and test AUC sat at .874 +- .015 (max_len 50, lr 3e-3, patience 20; ~20 recipes of
    # lr/batch/mask/dropout/size and last_item_fraction .1-.5 gave .83-.875). Overlapping
    # windows of 20 (step 1, ~25x the rows) are the augmentation that helped: step 5 .886,
    # step 2 .897, step 1 .901 at lr 3e-3, .909 at lr 1e-3. Many steps an epoch, so patience 10.
    # Measured (2-core CPU, seeds 1-3, twice): test AUC .909 +- .005, best epoch 9-13, 46-70 s (SASRec .924)
    "synthetic_mind": {"max_len": 20, "window_step": 1, "hidden_size": 32, "num_layers": 1, "mask_ratio": 0.4,
                       "batch_size": 32, "lr": 1e-3, "epochs": 200, "patience": 10},
    # ~500 click sequences: small batches give enough steps; 10 topics of ~35 words need only
    # a small title encoder (these keys matter with item_encoder set; ID items score 0.5 here)
    "synthetic_mind_cold": {"max_len": 20, "batch_size": 32, "lr": 3e-3, "text_heads": 4, "text_head_dim": 8,
                            "text_query_dim": 32, "text_negatives": 256},
    # real titles: the title encoder at NRMS's size (the tower's defaults), not the small one
    # above (+.02 AUC on one seed, docs/text-tower.md); patience 10. Overlapping windows (a
    # start every 5 items, ~4x the rows) as on synthetic_mind, at lr 1e-3: one window per
    # sequence at lr 3e-3 gave test AUC .730 +- .011 (seeds 1-3), with windows .741 +- .022
    # (validation .761 -> .784), at about twice the training time. A start every 10 items
    # (~2x the rows): .757 +- .009 (seeds 1-3, NRMS-GloVe .769 +- .006), reaching its best
    # epoch in 0.79-1.41x (mean 0.93x) the time of NRMS-GloVe's run started beside it; on
    # seed 1 step 5 took 1.45x (docs/text-tower.md)
    "mind_titles_cold": {"max_len": 20, "window_step": 10, "lr": 1e-3, "text_negatives": 256, "patience": 10},
}

NAMED_PRESETS = {
    # Petrov & Macdonald-style long training of a larger model (see the module docstring)
    "strong": {
        "ml-1m": {"max_len": 200, "mask_ratio": 0.2, "hidden_size": 256, "num_heads": 4, "num_layers": 2,
                  "dropout": 0.2, "batch_size": 512, "lr": 1e-3, "weight_decay": 0.01,
                  "epochs": 1500, "patience": 150},
        "beauty": {"max_len": 50, "mask_ratio": 0.6, "hidden_size": 256, "num_heads": 4, "num_layers": 2,
                   "dropout": 0.3, "batch_size": 512, "lr": 1e-3, "weight_decay": 0.01,
                   "epochs": 600, "patience": 60},
    },
    # The original code's recipe (github.com/FeiSun/BERT4Rec: run_ml-1m.sh, run_beauty.sh,
    # gen_data_fin.py, bert_train/*_64.json, optimization.py), as far as this implementation
    # follows it: 400,000 steps of batch 256 at lr 1e-4 with 100 warmup steps and linear
    # decay, overlapping windows, one last-item-only copy per 10 randomly masked ones,
    # separate hidden and attention dropout, no early stopping. Not followed: masks drawn once
    # and stored (10 copies of each window) -- here redrawn every epoch; training on the
    # validation item as well -- here it is held out to select the epoch. `epochs` converts
    # the 400k steps at this code's window counts of the training sequences (ML-1m 10,253
    # windows = 41 steps per epoch; Beauty 41,689 = 163; checked by a realdata test). Hours on
    # one GPU, not minutes: the recipe to check a gap against, not the default.
    "original": {
        "*": {"lr": 1e-4, "lr_schedule": "linear", "warmup_steps": 100,    # run_*.sh, optimization.py
              "weight_decay": 0.01, "batch_size": 256, "grad_clip": 5.0,    # optimization.py
              "hidden_size": 64, "num_layers": 2, "num_heads": 2,           # bert_train/*_64.json
              "last_item_fraction": 0.09090909090909091,   # 1/11: gen_data_fin.py, dupe_factor 10 + mask_last
              "patience": 0},                                               # tested once, after the last step
        "ml-1m": {"max_len": 200, "mask_ratio": 0.2,                        # max_seq_length, masked_lm_prob
                  "dropout": 0.2, "attention_dropout": 0.2,                 # bert_train/bert_config_ml-1m_64.json
                  "window_step": 100,                                       # prop_sliding_window 0.5 of 200
                  "epochs": 9756},                                          # 400,000 steps / 41 per epoch
        "beauty": {"max_len": 50, "mask_ratio": 0.6,
                   "dropout": 0.5, "attention_dropout": 0.2,                # bert_train/bert_config_beauty_64.json
                   "window_step": 5,                                        # prop_sliding_window 0.1 of 50
                   "epochs": 2454},                                         # 400,000 steps / 163 per epoch
    },
}

# The paper's ablation study (§4.8), each a config key set to false; its other rows are
# existing keys: dropout=0 (w/o Dropout), num_layers and num_heads. The output layer keeps
# its LayerNorm under w/o LN: it is the prediction head, not a Transformer layer.
ABLATIONS = {"position_embedding": "w/o PE", "feed_forward": "w/o PFFN", "layer_norm": "w/o LN",
             "residual": "w/o RC"}

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


class BERT4Rec(nn.Module):
    config_class = BERT4RecConfig

    def __init__(self, config: BERT4RecConfig, catalog: ItemCatalog):
        super().__init__()
        adopt_catalog(self, config, catalog)
        check_item_text(config, catalog, "bert4rec")
        self.unknown_row = self.n_known + 1
        self.mask_row = self.n_known + 2
        H = config.hidden_size
        text = bool(config.item_encoder.strip())
        # ID items: rows for pad, the known items, unknown and [MASK]; text items: the tower below
        self.item_embedding = None if text else nn.Embedding(self.n_known + 3, H, padding_idx=PAD)
        self.position_embedding = nn.Embedding(config.max_len, H) if config.position_embedding else None
        self.embedding_norm = nn.LayerNorm(H) if config.layer_norm else nn.Identity()
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(H, config.num_heads, config.ffn_size or 4 * H, config.dropout, config.attention,
                             attention_dropout=config.attention_dropout, feed_forward=config.feed_forward,
                             layer_norm=config.layer_norm, residual=config.residual)
            for _ in range(config.num_layers))
        self.head_dense = nn.Linear(H, H)
        self.head_norm = nn.LayerNorm(H)
        # a per-item bias: known rows + unknown row (a text item's bias would never train if it is unseen)
        self.output_bias = None if text else nn.Parameter(torch.zeros(self.n_known + 1))
        self.apply(init_weights)
        # built after init_weights, which would overwrite pretrained word vectors and PLM weights
        self.item_tower = TextItemTower(config, catalog, H, config.dropout, "bert4rec") if text else None
        self.mask_vector = nn.Parameter(0.02 * torch.randn(H)) if text else None
        # per sequence width w, the most positions mask_count can pick (w real ones the most)
        self.most_masked = self.mask_count(torch.arange(config.max_len + 1)).cummax(0).values.tolist()
        self.compiles = not text   # the tower's candidates have data-dependent shapes

    def describe(self) -> dict:
        info = dict(self.item_tower.describe() if self.item_tower else item_coverage(self.n_known, self.n_items))
        ablated = [label for key, label in ABLATIONS.items() if not getattr(self.config, key)]
        if ablated:
            info["variant"] = ", ".join(filter(None, [info.get("variant"), *ablated]))
        return info

    def item_vectors(self) -> torch.Tensor | None:
        """Text items: every title encoded once per evaluation. ID items: None, scoring reads
        the output layer directly."""
        return self.item_tower.all_items() if self.item_tower else None

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """[B, L] embedding rows (ID items), left-padded, L <= max_len -> [B, L, H]."""
        return self.contextualize(self.item_embedding(rows), rows != PAD)

    def contextualize(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """[B, L, H] item vectors, left-padded (``real`` False on padding), L <= max_len ->
        [B, L, H]. Positions are right-aligned, so the most recent position always has the
        same embedding."""
        B, L, _ = x.shape
        max_len = self.config.max_len
        positions = torch.arange(max_len - L, max_len, device=x.device)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        x = self.embedding_dropout(self.embedding_norm(x))
        keys = real.clone()
        keys[:, -1] = True  # an all-padding row would otherwise attend to nothing (NaN)
        mask = keys[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return x

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's output transform, before the dot product with the item vectors."""
        return self.head_norm(F.gelu(self.head_dense(hidden)))

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """ID items: [N, H] -> float32 [N, n_known + 1] (own rows, then the shared unknown row)."""
        return float32_logits(self.head(hidden), self.item_embedding.weight[1:self.unknown_row + 1], self.output_bias)

    def mask_count(self, n: torch.Tensor) -> torch.Tensor:
        """How many of ``n`` real positions are masked: round(mask_ratio * n), at least one, at most n."""
        return torch.minimum((n.float() * self.config.mask_ratio).round().long().clamp(min=1), n)

    def mask_positions(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cloze positions of each row, chosen uniformly at random among its real ones:
        ([B, M] positions, [B, M] bool, True on the ``mask_count`` of them that are masked).

        M is the most a row as wide as ``seq`` can have masked, so no shape depends on the
        data (no device -> host sync, one compiled graph). Each row's masked positions are
        the ones with the smallest random keys; M slots cost a little padding in the loss."""
        real = seq != PAD
        count = self.mask_count(real.sum(dim=1))
        keys = torch.rand(seq.shape, device=seq.device).masked_fill(~real, 2.0)
        if self.config.last_item_fraction > 0:   # drawn after the keys: without it the draws are as before
            # the original code's extra copy of each window with only its last item masked:
            # training on exactly the task it is tested on (the next item after the sequence)
            last_only = torch.rand(seq.size(0), device=seq.device) < self.config.last_item_fraction
            keys[:, -1] = torch.where(last_only, -1.0, keys[:, -1])   # left padding: the last slot is real
            count = torch.where(last_only, count.clamp(max=1), count)
        slots = self.most_masked[seq.size(1)]
        # stable: ties (rare) break by position, the same in eager and compiled code
        positions = keys.argsort(dim=1, stable=True)[:, :slots]
        return positions, torch.arange(slots, device=seq.device) < count[:, None]

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        seq = batch.seq[:, -self.config.max_len:]
        positions, chosen = self.mask_positions(seq)
        masked = torch.zeros_like(seq, dtype=torch.bool).scatter(1, positions, chosen)
        if self.item_tower is None:
            rows = self.item_to_row[seq]
            hidden = self.encode(rows.masked_fill(masked, self.mask_row))
            candidates, targets = self.item_embedding.weight[1:self.unknown_row + 1], rows.gather(1, positions) - 1
        else:
            # sampled softmax over titles; the masked items are candidates anyway, so encoding
            # them as inputs too costs nothing (each distinct item is encoded once). The
            # tower's candidates depend on the batch (torch.unique): no static shapes here.
            inputs, candidates, columns = self.item_tower.training_vectors(seq, seq.gather(1, positions)[chosen])
            inputs = torch.where(masked[..., None], self.mask_vector.to(inputs.dtype), inputs)
            hidden = self.contextualize(inputs, seq != PAD)
            targets = torch.full_like(positions, IGNORE).masked_scatter(chosen, columns)
        picked = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.size(-1)))
        return full_softmax_loss(self.head(picked).flatten(0, 1), candidates, self.output_bias,
                                 targets.masked_fill(~chosen, IGNORE).flatten(), self.config.loss_chunk)

    def score(self, batch: SequenceBatch, item_vectors=None) -> torch.Tensor:
        """[B, n_items + 1] scores for the item after ``batch.seq``: the prediction at a
        [MASK] appended to the last ``max_len - 1`` items."""
        seq = batch.seq[:, -(self.config.max_len - 1):]
        if self.item_tower is None:
            rows = self.item_to_row[seq]
            mask_column = torch.full((rows.size(0), 1), self.mask_row, dtype=rows.dtype, device=rows.device)
            hidden = self.encode(torch.cat([rows, mask_column], dim=1))[:, -1]
            return rows_to_items(self.output_logits(hidden), self.item_to_row)
        vectors = self.item_tower.all_items() if item_vectors is None else item_vectors
        inputs = torch.cat([vectors[seq], self.mask_vector.to(vectors.dtype).expand(len(seq), 1, -1)], dim=1)
        hidden = self.contextualize(inputs, F.pad(seq != PAD, (0, 1), value=True))[:, -1]
        return with_padding_column(float32_logits(self.head(hidden), vectors))
