"""GRU4Rec (Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks",
ICLR'16) and GRU4Rec+ (Hidasi & Karatzoglou, "Recurrent Neural Networks with Top-k Gains
for Session-based Recommendations", CIKM'18): two Table 2 baselines of the BERT4Rec paper,
which ran the authors' code (§4.3). One class, two registry names:

* ``gru4rec``: the ICLR'16 model: the TOP1 loss, the other sequences' targets of the
  mini-batch as the only negatives (``n_sample`` 0);
* ``gru4rec_plus`` (registry overrides ``loss="bpr-max"``, ``n_sample=2048``): BPR-max over
  the mini-batch targets plus 2048 shared extra negatives drawn with probability
  proportional to popularity^``sample_alpha``, with the score regularisation ``bpreg`` and
  ELU(``elu_param``) on the scores.

Everything follows the official code (github.com/hidasib/GRU4Rec and its PyTorch port
GRU4Rec_PyTorch_Official, ``gru4rec_pytorch.py``), not third-party ports: Hidasi & Czapp
("The effect of third party implementations on reproducibility", RecSys'23) show that the
common reimplementations (RecBole's among them) miss its sampling and losses and score far
lower. As in the official code: one GRU layer; the output weights Wy double as the input
embedding (``constrained_embedding=True``) with an output bias By; dropout on the embedded
input (``dropout_p_embed``) and on the GRU output (``dropout_p_hidden``); BPR-max =
-ln sum_j s_j sigma(r_i - r_j) + bpreg * sum_j s_j r_j^2, s = softmax over the negatives'
scores; ``loss="cross-entropy"`` (the official default) is a softmax over target and
negatives with the logQ correction ``logq`` (scores minus logq * ln of each column's
sampling count: popularity for mini-batch targets, popularity^alpha for extra samples);
Glorot-uniform weights, zero biases. Adam(W) from the harness replaces the official
Adagrad with momentum; with ``sparse_updates`` (the Beauty, Steam and ML-20m presets) the
item tables train with a lazy Adam that, like the official indexed Adagrad, moves only the
rows a batch read: a dense step over Beauty's 54,542 rows was 41% of a step's CPU time.

Session-parallel mini-batches become windows: the harness hands B left-padded windows of
each user's training items; each is right-aligned (items first), the GRU runs over all of
them from a zero state, and step t of the B windows is one of the official code's
mini-batches: every window's next item there is its positive and the other windows' next
items are its negatives (padding left out). The extra samples are drawn once per batch of
windows and shared by all its steps (the official code draws them per step). Negatives are
not checked against the user's items, as in the official code.

Validation and test, the same for every baseline here: the model trains on each user's
items but the last two; validation predicts item n-1 from the items before it; test
predicts item n from all items before it. The validation item is then input and masked
from the full ranking as seen, but never trained on. GRU4Rec reads the last ``max_len``
input items, so at test time the validation item is the GRU's last input.

Items never seen in training share one embedding row (``layers.item_rows``) and are never
sampled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from recboard.datasets.batches import PAD, ItemCatalog, SequenceBatch
from recboard.models.checks import is_fraction, require
from recboard.models.layers import adopt_catalog, candidate_logits, float32_logits, item_coverage, rows_to_items
from recboard.models.negatives import glorot_uniform_


LOSSES = ("top1", "bpr-max", "cross-entropy")


@dataclass
class GRU4RecConfig:
    hidden_size: int = 64         # GRU units = embedding size (official: layers=[100]; BERT4Rec §4.3: d in {16..256})
    loss: str = "top1"            # top1 (ICLR'16) | bpr-max (GRU4Rec+) | cross-entropy (the official code's default)
    n_sample: int = 0             # extra negatives per batch, shared (official n_sample; GRU4Rec+: 2048)
    sample_alpha: float = 0.5     # extra negatives drawn by popularity^alpha (official sample_alpha=0.5)
    bpreg: float = 1.0            # BPR-max score regularisation (official bpreg=1.0)
    elu_param: float = 0.5        # BPR-max scores through ELU(alpha); 0 = none (official elu_param=0.5)
    logq: float = 0.0             # cross-entropy logQ correction (official logq=0.0; its xe paramfiles use 1.0)
    dropout_p_embed: float = 0.0  # dropout on the embedded input (official default 0.0)
    dropout_p_hidden: float = 0.0  # dropout on the GRU output (official default 0.0)
    sparse_updates: bool = False  # Wy, By give sparse gradients: a step moves only the rows it read (as the official
    #                               indexed Adagrad does; the harness then uses SparseAdam for them, AdamW for the GRU)

    def check(self) -> None:
        require("gru4rec", self, [
            ("hidden_size", self.hidden_size >= 1, "a positive integer"),
            ("loss", self.loss in LOSSES, f"one of {', '.join(LOSSES)}"),
            ("n_sample", self.n_sample >= 0, ">= 0 (0 = mini-batch negatives only)"),
            ("sample_alpha", 0.0 <= self.sample_alpha <= 1.0, "in [0, 1] (0 = uniform, 1 = popularity)"),
            ("bpreg", self.bpreg >= 0, ">= 0"),
            ("elu_param", self.elu_param >= 0, ">= 0 (0 = no ELU)"),
            ("logq", self.logq >= 0, ">= 0 (0 = no correction)"),
            ("dropout_p_embed", is_fraction(self.dropout_p_embed), "in [0, 1)"),
            ("dropout_p_hidden", is_fraction(self.dropout_p_hidden), "in [0, 1)"),
        ])


PRESETS = {
    # gru4rec_pytorch.py defaults: batch 64 sessions, no dropout (the loss and n_sample are
    # the registry names' recipes, so no preset sets them); lr 1e-3 is Adam's, not Adagrad's 0.05.
    # BERT4Rec §4.3: d and dropout tuned on validation.
    "*": {"hidden_size": 64, "dropout_p_embed": 0.0, "dropout_p_hidden": 0.0, "lr": 1e-3, "batch_size": 64,
          "weight_decay": 0.0, "epochs": 100, "patience": 10},
    # BERT4Rec's windows on ML-1m and Beauty (its max_len 200 / 50). ML-1m lr: measured
    # (sampled-pop100, seed 42): at 1e-3 validation NDCG@10 still rose ~.002 an epoch at
    # epoch 24 (.408); at 1e-2 it levels off at epoch 7 (.443), the run ends at 12 (~4 min)
    "ml-1m": {"max_len": 200, "lr": 1e-2, "epochs": 40, "patience": 5},
    # Beauty, Steam, ML-20m: 13-55k items, so lazy updates of the item tables (a Beauty step
    # 161 -> 80 ms on one CPU core, benchmarks/speed/sparse_updates.py). A lazy row moves once
    # per batch that reads it, where Adam's momentum keeps moving it for ~10 steps, so a
    # higher lr. Measured on Beauty (sampled-pop100, seed 1, validation NDCG@10): dense lr
    # 1e-3 .145 at epoch 3, still rising at epoch 43 (.203); dense 3e-3 .207 at epoch 15; lazy
    # 1e-3 .107 at epoch 3; lazy 1e-2 .208 at epoch 15 and .210 at 20, at half dense's epoch
    # time. Past epoch ~15 it gains < .001 an epoch, so patience 5. Measured with it (seeds 1-3):
    # best epochs 25, 30, 40, test HR@10 .3147 / NDCG@10 .1820, 13-17 min a run on a busy CPU
    "beauty": {"max_len": 50, "dropout_p_hidden": 0.2, "sparse_updates": True, "lr": 1e-2, "patience": 5},
    "ml-20m": {"max_len": 200, "lr": 1e-2, "epochs": 40, "patience": 5,   # ML-1m's, BERT4Rec's window
               "sparse_updates": True},
    "steam": {"max_len": 50, "dropout_p_hidden": 0.2, "sparse_updates": True},
    "mind": {"max_len": 50, "batch_size": 128, "epochs": 20, "patience": 3},
    "synthetic_seq": {"hidden_size": 32, "max_len": 20, "lr": 1e-2, "batch_size": 64, "epochs": 15,
                      "patience": 0},
}

NAMED_PRESETS = {
    # GRU4Rec+'s own recipe: the registry name gru4rec_plus applies it after PRESETS
    # (``ModelSpec.preset``); ``gru4rec --preset plus`` trains the TOP1 model on it. An epoch
    # scores every event against 2048 + 64 negatives: ~80 s on one CPU core for ML-1m, five
    # times GRU4Rec's, so the recipe must level off in few epochs (the official code trains
    # 10: n_epochs in paramfiles/*_bprmax_shared_best.py).
    "plus": {
        # measured (ML-1m, sampled-pop100, seed 42): Adam lr 1e-3 still rose ~.008 validation
        # NDCG@10 an epoch at epoch 9; 3e-3 still rose at its 20th epoch (.500, 37 min); 1e-2
        # levels off at epoch 10 (.495). Patience 3 ends it 3 epochs later, within 30 minutes.
        # Its record (seeds 1-3): best epochs 8, 18, 11 (seed 2 crept up .001 an epoch to the
        # cap of 20), test HR@10 .6875 / NDCG@10 .4734, 76-83 s an epoch on a core of its own:
        # 14-28 minutes a run, 19.6 on the mean
        "ml-1m": {"lr": 1e-2, "epochs": 20, "patience": 3},
        # the recipe of its Beauty record (sampled-pop100, 3 seeds): dense Adam at lr 1e-3 levels
        # off by epoch 7; GRU4Rec's lazy lr 1e-2 Beauty recipe is not measured with BPR-max
        "beauty": {"lr": 1e-3, "sparse_updates": False, "patience": 10},
    },
}

SEARCH_SPACE = {
    # the official paramspaces/gru4rec_bprmax_standard_parspace.json, where it applies
    "hidden_size": ("categorical", [16, 32, 64, 128, 256]),   # BERT4Rec §4.3
    "dropout_p_embed": ("float", 0.0, 0.5),
    "dropout_p_hidden": ("float", 0.0, 0.7),
    "sample_alpha": ("float", 0.0, 1.0),
    "bpreg": ("float", 0.0, 2.0),
    "elu_param": ("categorical", [0.0, 0.5, 1.0]),
    "lr": ("logfloat", 1e-4, 1e-2),
    "batch_size": ("categorical", [32, 64, 128, 256]),
}


def right_aligned(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded [B, M] -> (the same items first, then the padding; lengths [B])."""
    lengths = (rows != PAD).sum(1)
    width = rows.size(1)
    index = (torch.arange(width, device=rows.device) + (width - lengths)[:, None]) % width
    return rows.gather(1, index), lengths


def in_blocks(fn, rows: int, *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)`` ([N] per row) computed ``rows`` rows at a time, each block's
    intermediates recomputed in backward instead of kept, so each block's work stays in
    cache. ``fn`` draws nothing at random: no RNG state needs restoring."""
    n = len(tensors[0])
    return torch.cat([checkpoint(fn, *(t[start:start + rows] for t in tensors), use_reentrant=False,
                                 preserve_rng_state=False)
                      for start in range(0, max(n, 1), rows)])


class GRU4Rec(nn.Module):
    config_class = GRU4RecConfig

    def __init__(self, config: GRU4RecConfig, catalog: ItemCatalog):
        super().__init__()
        adopt_catalog(self, config, catalog)
        H, n_rows = config.hidden_size, self.n_known + 2   # rows: pad, known, unknown
        # output weights and input embedding
        self.Wy = nn.Embedding(n_rows, H, padding_idx=PAD, sparse=config.sparse_updates)
        self.By = nn.Embedding(n_rows, 1, sparse=config.sparse_updates)
        self.gru = nn.GRU(H, H, batch_first=True)
        self.embed_dropout = nn.Dropout(config.dropout_p_embed)
        self.hidden_dropout = nn.Dropout(config.dropout_p_hidden)
        # training counts by row: extra negatives by count^alpha, logQ's sampling counts (1 where 0)
        train_counts = torch.as_tensor(catalog.train_counts, dtype=torch.float32)
        seen = train_counts > 0
        seen[PAD] = False
        counts = torch.ones(n_rows)
        counts[self.item_to_row[seen]] = train_counts[seen]
        self.register_buffer("row_counts", counts)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init: U(+-sqrt(6 / (fan_in + fan_out))) per weight matrix (each GRU
        gate on its own), zero biases."""
        H = self.config.hidden_size
        glorot_uniform_(self.Wy.weight, self.Wy.num_embeddings, H)
        with torch.no_grad():
            self.Wy.weight[PAD].zero_()
        nn.init.zeros_(self.By.weight)
        for name, weight in self.gru.named_parameters():
            if name.startswith("weight"):
                for gate in weight.chunk(3, 0):
                    glorot_uniform_(gate, H, H)
            else:
                nn.init.zeros_(weight)

    def describe(self) -> dict:
        return item_coverage(self.n_known, self.n_items)

    def item_vectors(self) -> None:
        return None

    def hidden_states(self, rows: torch.Tensor) -> torch.Tensor:
        """Right-aligned item rows [B, T] -> GRU outputs [B, T, H]; padding comes after the
        items, so it changes no output at a real position."""
        output, _ = self.gru(self.embed_dropout(self.Wy(rows)))
        return self.hidden_dropout(output)

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Mean ``loss`` over the events, every real next item of the windows: step t of all
        windows is one mini-batch (see the module docstring).

        Why it is built this way (the CPU profile of a GRU4Rec+ step on ML-1m): scoring each
        (step, window) against the 2048 shared negatives is ~95% of the step. So the padding
        steps of the windows are not scored at all (~40% of ML-1m's windows of 200), and the
        events are scored in blocks of ~2^19 scores whose intermediates backward recomputes
        rather than keeps (``in_blocks``): a dozen element-wise passes over one
        [events, 2048] float32 array would each spill every CPU cache."""
        rows, lengths = right_aligned(self.item_to_row[batch.seq])
        # steps after the longest window's last item are padding in every window: not run
        rows = rows[:, :max(int(lengths.max()), 2)]
        targets = rows[:, 1:].T                                              # [T, B]
        hidden = self.hidden_states(rows[:, :-1]).transpose(0, 1)            # [T, B, H]
        # [t, b, c]: window b's step-t state scoring window c's step-t target (column b: its own)
        in_batch = hidden @ self.Wy(targets).transpose(1, 2) + self.By(targets).transpose(1, 2)
        logq = self.config.logq if self.config.loss == "cross-entropy" else 0.0
        if logq:   # in-batch targets were drawn by popularity
            in_batch = in_batch - logq * self.row_counts[targets].log()[:, None, :]
        step, window = (targets != PAD).nonzero(as_tuple=True)               # the events, [N] each
        negative = targets[step] != PAD                                      # [N, B]: the other windows' targets
        negative[torch.arange(len(step), device=rows.device), window] = False
        extra = None
        if self.config.n_sample:   # drawn once per batch, shared by all its events
            sampled = torch.multinomial(self.row_counts[1:self.n_known + 1] ** self.config.sample_alpha,
                                        self.config.n_sample, replacement=True) + 1
            bias = self.By(sampled)[:, 0]
            if logq:
                bias = bias - logq * self.config.sample_alpha * self.row_counts[sampled].log()
            extra = (self.Wy(sampled), bias)

        def block_losses(states, scores, positive, negative):
            if extra is not None:   # one matmul per block of events against all the extra negatives
                scores = torch.cat([scores, states @ extra[0].T + extra[1]], 1)
                negative = F.pad(negative, (0, len(extra[1])), value=True)
            return self.event_losses(scores, positive, negative)

        width = in_batch.size(2) + (self.config.n_sample if extra is not None else 0)
        losses = in_blocks(block_losses, max(1, 2 ** 19 // width),
                           hidden[step, window], in_batch[step, window], window, negative)
        # an event with no negative at all (a lone window, no extra samples) has no loss
        keep = negative.any(-1) if extra is None else torch.ones_like(window, dtype=torch.bool)
        return (losses * keep).sum() / keep.sum().clamp(min=1)

    def event_losses(self, scores: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """[N, C] scores of N events (column ``positive[n]`` the positive of row n; ``negative``
        marks the negatives) -> [N] losses, as ``gru4rec_pytorch.py`` computes them."""
        column = positive[:, None]
        lowest = torch.finfo(scores.dtype).min
        if self.config.loss == "cross-entropy":
            in_softmax = negative.scatter(1, column, True)
            return scores.masked_fill(~in_softmax, lowest).logsumexp(-1) - scores.gather(1, column)[:, 0]
        if self.config.loss == "bpr-max":
            if self.config.elu_param:
                scores = F.elu(scores, self.config.elu_param)
            weights = scores.masked_fill(~negative, lowest).softmax(-1) * negative
            ranked = (torch.sigmoid(scores.gather(1, column) - scores) * weights).sum(-1)
            return -torch.log(ranked + 1e-24) + self.config.bpreg * (scores.square() * weights).sum(-1)
        # TOP1: mean over the negatives of sigma(r_j - r_i) + sigma(r_j^2)
        top1 = torch.sigmoid(scores - scores.gather(1, column)) + torch.sigmoid(scores.square())
        return (top1 * negative).sum(-1) / negative.sum(-1).clamp(min=1)

    def last_state(self, batch: SequenceBatch) -> torch.Tensor:
        """[B, H]: the GRU state after the last input item."""
        rows, lengths = right_aligned(self.item_to_row[batch.seq])
        hidden = self.hidden_states(rows)
        return hidden[torch.arange(len(rows), device=rows.device), (lengths - 1).clamp(min=0)]

    def score(self, batch: SequenceBatch, item_vectors=None) -> torch.Tensor:
        """[B, n_items + 1]: the GRU state after the last input item against every item."""
        return rows_to_items(float32_logits(self.last_state(batch), self.Wy.weight[1:], self.By.weight[1:, 0]),
                             self.item_to_row)

    def score_items(self, batch: SequenceBatch, items: torch.Tensor, item_vectors=None) -> torch.Tensor:
        """[B, C]: ``score`` at the items [B, C] only (the sampled protocols' candidates)."""
        rows = self.item_to_row[items]
        return candidate_logits(self.last_state(batch), self.Wy(rows), self.By(rows)[..., 0])
