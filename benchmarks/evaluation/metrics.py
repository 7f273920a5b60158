"""Ranking metrics as batched torch ops (run on whatever device the scores live on).

Sequence protocols rank one target per user:
  * ``full``: every item is a candidate; the user's seen items (except the target) and the
    padding column are masked out.
  * ``sampled-uni100`` / ``sampled-pop100``: the target plus 100 negatives drawn once per
    user (uniformly / in proportion to each item's interactions over the whole dataset, as
    the BERT4Rec paper's code does) with a fixed seed, excluding items the user interacted
    with, and cached (``recboard.benchmarks.evaluation.negatives.cached_negatives``). Krichene & Rendle
    (KDD'20) show sampled metrics can reorder models, so the protocol is always part of a
    result's key.

Ties are broken pessimistically (an item scoring the same as the target is ranked above it),
so a constant scorer gets the worst rank instead of a flattering one.

Impression metrics follow the MIND evaluation script: per-impression AUC, MRR and nDCG@k,
averaged over impressions.
"""
from __future__ import annotations

import math

import torch

SEQUENCE_KS = (1, 5, 10)


def target_ranks(scores: torch.Tensor, target_index: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of column ``target_index[b]`` in row b of ``scores`` among ``valid`` columns."""
    scores = scores.float()
    target_score = scores.gather(1, target_index.view(-1, 1))
    above = scores >= target_score
    if valid is not None:
        above &= valid
    # the target itself always satisfies >=; do not count it
    return above.sum(dim=1) - 1


def rank_metrics(ranks: torch.Tensor) -> dict:
    """Per-example HR@k, NDCG@k (k in 1, 5, 10; NDCG@1 == HR@1 so omitted) and reciprocal rank."""
    ranks = ranks.float()
    out = {}
    for k in SEQUENCE_KS:
        hit = (ranks < k).float()
        out[f"HR@{k}"] = hit
        if k > 1:
            out[f"NDCG@{k}"] = hit / torch.log2(ranks + 2.0)
    out["MRR"] = 1.0 / (ranks + 1.0)
    return out


def mask_seen(scores: torch.Tensor, seq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Full-ranking scores with the padding column and the user's seen items (``seq``, [B, L]
    padded with 0) except the target set to -inf, in place."""
    rows = torch.arange(len(seq), device=seq.device).repeat_interleave(seq.size(1))
    return mask_seen_pairs(scores, rows, seq.flatten(), target)


def mask_seen_pairs(scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mask_seen`` for seen items given as (row, item) pairs: a batch's slice of the
    histories kept flat, so no tensor is as wide as the longest history."""
    scores[:, 0] = -math.inf
    target_score = scores.gather(1, target.view(-1, 1)).clone()
    scores[rows, items] = -math.inf
    scores.scatter_(1, target.view(-1, 1), target_score)
    return scores


def impression_metrics(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict:
    """Per-impression AUC, MRR, nDCG@5, nDCG@10 for a padded batch [B, C].

    AUC counts (positive, negative) pairs ordered correctly, ties as half (the Mann-Whitney
    form of roc_auc_score). MRR and nDCG order candidates by score like MIND's script.
    Impressions with no positive or no negative get AUC = nan (excluded by the caller).
    """
    scores = scores.float().masked_fill(~mask, -math.inf)
    labels = labels.float() * mask
    neg = (1.0 - labels) * mask
    n_pos, n_neg = labels.sum(1), neg.sum(1)

    diff = scores.unsqueeze(2) - scores.unsqueeze(1)          # [B, C, C]: s_i - s_j
    pair = labels.unsqueeze(2) * neg.unsqueeze(1)             # i positive, j negative
    correct = ((diff > 0).float() + 0.5 * (diff == 0).float()) * pair
    auc = correct.sum((1, 2)) / (n_pos * n_neg)
    auc = torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, math.nan))

    order = scores.argsort(dim=1, descending=True, stable=True)
    sorted_labels = labels.gather(1, order)
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=torch.float32)
    mrr = (sorted_labels / positions).sum(1) / n_pos.clamp(min=1)
    discounts = 1.0 / torch.log2(positions + 1.0)
    ideal = labels.sort(dim=1, descending=True).values
    out = {"AUC": auc, "MRR": mrr}
    for k in (5, 10):
        dcg = ((2 ** sorted_labels[:, :k] - 1) * discounts[:k]).sum(1)
        idcg = ((2 ** ideal[:, :k] - 1) * discounts[:k]).sum(1)
        out[f"nDCG@{k}"] = dcg / idcg.clamp(min=1e-12)
    return out


class MeanAccumulator:
    """Sums per-example metric tensors on the device; one host sync at the end. With
    ``keep_examples`` it also keeps every example's values by row id (``examples()``), what
    paired significance tests compare."""

    def __init__(self, keep_examples: bool = False):
        self.sums: dict = {}
        self.counts: dict = {}
        self.kept: list | None = [] if keep_examples else None

    def add(self, values: dict, rows=None) -> None:
        for name, v in values.items():
            ok = ~torch.isnan(v)
            self.sums[name] = self.sums.get(name, 0.0) + torch.where(ok, v, torch.zeros_like(v)).sum()
            self.counts[name] = self.counts.get(name, 0) + ok.sum()
        if self.kept is not None:
            self.kept.append((rows, {name: v.detach().float() for name, v in values.items()}))

    def examples(self) -> dict:
        """{"row": int64 [N], metric: float64 [N] (NaN where undefined, e.g. AUC of an
        impression without negatives)}, on the host, in row order."""
        import numpy as np

        if not self.kept:   # an empty split
            return {"row": np.zeros(0, dtype=np.int64)}
        rows = np.concatenate([np.asarray(r, dtype=np.int64) for r, _ in self.kept])
        order = np.argsort(rows, kind="stable")
        out = {"row": rows[order]}
        for name in self.kept[0][1] if self.kept else ():
            out[name] = torch.cat([v[name] for _, v in self.kept]).double().cpu().numpy()[order]
        return out

    def result(self) -> dict:
        """Means over all examples (summed across ranks under torchrun)."""
        from recboard.benchmarks.distributed import all_reduce_sum
        out = {}
        for name in sorted(self.sums):
            total = all_reduce_sum(torch.stack([torch.as_tensor(self.sums[name], dtype=torch.float64),
                                                torch.as_tensor(self.counts[name], dtype=torch.float64)]))
            out[name] = float(total[0] / total[1].clamp(min=1))
        return out
