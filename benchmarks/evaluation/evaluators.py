"""Batched evaluation on the model's device: full ranking with seen-item masking, sampled
protocols with cached negatives, and MIND-style impression metrics.

Every item/news is encoded once per evaluation (``model.item_vectors()``, None for models
with nothing to pre-encode) and handed to ``model.score`` for each batch; inputs are padded
once per split and kept as tensors, so an evaluation pass is a handful of large batched ops.
Which evaluator a run uses, and with what inputs, is its route's choice
(``recboard.benchmarks.training.routes``).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from recboard.benchmarks import distributed as D
from recboard.benchmarks.evaluation import metrics as M
from recboard.benchmarks.evaluation.negatives import cached_negatives
from recboard.datasets.batches import (PAD, ImpressionBatch, Impressions, NewsData, SequenceBatch,
                                       SequenceData, left_pad, right_pad)

def autocast(device_type: str, amp_dtype):
    """bf16 autocast when ``amp_dtype`` is set (CUDA runs), a no-op otherwise."""
    return torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)


@contextlib.contextmanager
def scoring(model, device_type: str, amp_dtype):
    """Eval mode, no grad and autocast for one evaluation pass; yields the model's item
    vectors (encoded once for the whole pass) and restores the training mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device_type, amp_dtype):
            yield model.item_vectors()
    finally:
        model.train(was_training)


# ------------------------------------------------------------------ sequences

class SequenceEvaluator:
    """Holds one split's padded inputs on the device and scores a model on it."""

    def __init__(self, data: SequenceData, split: str, max_len: int, protocol: str, device,
                 batch_size: int = 512, seed: int = 42):
        inputs, targets, users = data.eval_examples(split)
        rows = D.shard(len(targets))  # torchrun: each rank scores a share, metric sums are all-reduced
        inputs, targets, users = inputs[rows], targets[rows], users[rows]
        self.users = users
        self.user = torch.as_tensor(users, device=device)
        self.protocol = protocol
        self.batch_size = batch_size
        self.seq = torch.as_tensor(left_pad(inputs, max_len), device=device)
        self.target = torch.as_tensor(targets, device=device)
        if protocol == "full":
            # every seen item, not only the last max_len, is masked from the ranking; kept flat
            # (CSR): padded to the longest history it would be users x 9,254 on ML-20m (10 GB)
            lengths = np.fromiter((len(r) for r in inputs), dtype=np.int64, count=len(inputs))
            self.seen_offsets = np.concatenate([[0], np.cumsum(lengths)])
            self.seen_lengths = torch.as_tensor(lengths, device=device)
            self.seen_items = torch.as_tensor(np.concatenate(inputs).astype(np.int64) if inputs
                                              else np.zeros(0, dtype=np.int64), device=device)
        else:
            negatives = cached_negatives(data, protocol, seed)[users]
            self.candidates = torch.as_tensor(
                np.concatenate([targets[:, None], negatives], axis=1), device=device)

    def __len__(self) -> int:
        return len(self.target)

    def evaluate(self, model, amp_dtype=None, keep_examples: bool = False) -> dict:
        """Mean metrics over the split's users; with ``keep_examples`` every user's values
        are left in ``self.examples`` (rows = user indices)."""
        acc = M.MeanAccumulator(keep_examples)
        with scoring(model, self.seq.device.type, amp_dtype) as vectors:
            for start in range(0, len(self), self.batch_size):
                sl = slice(start, start + self.batch_size)
                batch = SequenceBatch(self.seq[sl], self.target[sl], self.user[sl])
                if self.protocol == "full":
                    scores = model.score(batch, item_vectors=vectors).float()
                    scores = M.mask_seen_pairs(scores, *self.seen_pairs(sl), batch.target)
                    ranks = M.target_ranks(scores, batch.target)
                else:
                    sampled = self.candidate_scores(model, batch, self.candidates[sl], vectors)
                    ranks = M.target_ranks(sampled, torch.zeros_like(batch.target))
                acc.add(M.rank_metrics(ranks), self.users[sl])
        self.examples = acc.examples() if keep_examples else None
        return acc.result()

    @staticmethod
    def candidate_scores(model, batch: SequenceBatch, candidates: torch.Tensor, vectors) -> torch.Tensor:
        """[B, C] scores of the candidates: the model's ``score_items`` where it has one (the
        full product costs as much as ranking every item: 2/3 of a Beauty epoch's time),
        else every item's score, gathered."""
        if hasattr(model, "score_items"):
            return model.score_items(batch, candidates, item_vectors=vectors).float()
        return model.score(batch, item_vectors=vectors).float().gather(1, candidates)

    def seen_pairs(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(row within the batch, item) of every item the batch's users have seen."""
        start, stop = self.seen_offsets[rows.start], self.seen_offsets[min(rows.stop, len(self))]
        lengths = self.seen_lengths[rows]
        batch_rows = torch.arange(len(lengths), device=lengths.device).repeat_interleave(lengths)
        return batch_rows, self.seen_items[start:stop]


# ------------------------------------------------------------------ impressions

def impression_sequence_inputs(data: NewsData, split: str) -> list:
    """Per-impression click sequence for ``split``: the user's history plus every click in
    impressions strictly before that split (train for valid, train + valid for test)."""
    block = data.valid if split == "valid" else data.test
    earlier = [data.train] if split == "valid" else [data.train, data.valid]
    clicks = data.user_clicks(earlier)
    return [np.asarray(clicks.get(int(u), block.history(i)), dtype=np.int64)
            for i, u in enumerate(block.user)]


class ImpressionEvaluator:
    """One split of impressions, padded on the device. ``history`` [N, H] is what the model
    reads for each impression (its history field, or a click sequence), and
    ``score_candidates(model, batch, item_vectors) -> [B, C]`` how the route scores it."""

    def __init__(self, block: Impressions, history: np.ndarray, score_candidates, device, batch_size: int = 512):
        self.batch_size = batch_size
        self.score_candidates = score_candidates
        self.history = torch.as_tensor(history, device=device)
        self.user = torch.as_tensor(block.user, dtype=torch.long, device=device)
        # impressions are sorted by candidate count so padded batches stay dense
        self.order = np.argsort(np.diff(block.cand_offsets), kind="stable")
        self.order = self.order[D.shard(len(self.order))]
        self.candidates = [block.candidates(i) for i in range(len(block))]
        self.labels = [block.labels(i) for i in range(len(block))]
        self.device = device

    def __len__(self) -> int:
        return len(self.order)

    def _batch(self, index: np.ndarray) -> ImpressionBatch:
        dev = self.device
        cands = torch.as_tensor(right_pad([self.candidates[i] for i in index], value=PAD), device=dev)
        labels = right_pad([self.labels[i] for i in index])
        # real candidates are never the padding index, so the mask is where they are
        rows = torch.as_tensor(index, device=dev)
        return ImpressionBatch(self.history[rows], cands, torch.as_tensor(labels, device=dev, dtype=torch.float32),
                               cands != PAD, self.user[rows])

    def evaluate(self, model, amp_dtype=None, keep_examples: bool = False) -> dict:
        """Mean metrics over impressions; with ``keep_examples`` every impression's values
        are left in ``self.examples`` (rows = impression indices in the split)."""
        acc = M.MeanAccumulator(keep_examples)
        with scoring(model, self.history.device.type, amp_dtype) as vectors:
            for start in range(0, len(self), self.batch_size):
                index = self.order[start:start + self.batch_size]
                batch = self._batch(index)
                acc.add(M.impression_metrics(self.score_candidates(model, batch, vectors), batch.labels, batch.mask),
                        index)
        self.examples = acc.examples() if keep_examples else None
        return acc.result()
