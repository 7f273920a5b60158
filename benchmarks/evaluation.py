"""Batched evaluation on the model's device: full ranking with seen-item masking, sampled
protocols with cached negatives, and MIND-style impression metrics.

Every item/news is encoded once per evaluation (``model.item_vectors()`` when the model has
it) and handed to ``model.score`` for each batch; inputs are padded once per split and kept
as tensors, so an evaluation pass is a handful of large batched ops.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from recboard.benchmarks import distributed as D
from recboard.benchmarks import metrics as M
from recboard.datasets.batches import (PAD, ImpressionBatch, Impressions, NewsData, SequenceBatch,
                                       SequenceData, left_pad, right_pad, to_ragged)

N_SAMPLED_NEGATIVES = 100


# ------------------------------------------------------------------ sampled negatives

def sample_negatives(data: SequenceData, kind: str, seed: int, n: int = N_SAMPLED_NEGATIVES) -> np.ndarray:
    """[n_users, n] negatives per user, never an item the user interacted with.

    ``kind`` "uni": uniform over items; "pop": proportional to interaction counts over the
    whole dataset (as in the BERT4Rec paper's code).
    """
    rng = np.random.default_rng(seed)
    n_items = data.n_items
    if kind == "pop":
        counts = np.bincount(data.items, minlength=n_items + 1).astype(np.float64)
        counts[0] = 0
        p = counts / counts.sum()
    elif kind == "uni":
        p = np.full(n_items + 1, 1.0 / n_items)
        p[0] = 0
    else:
        raise ValueError(f"negative sampling kind must be 'uni' or 'pop', got {kind!r}")
    support = set(np.flatnonzero(p > 0).tolist())
    out = np.zeros((data.n_users, n), dtype=np.int64)
    for u in range(data.n_users):
        seen = set(data.sequence(u).tolist())
        if len(support - seen) < n:
            raise ValueError(f"user {u} has seen {len(seen)} of {n_items} items: fewer than {n} negatives "
                             f"left to sample ({kind})")
        chosen: list = []
        chosen_set: set = set()
        while len(chosen) < n:
            for item in rng.choice(n_items + 1, size=2 * n, p=p).tolist():
                if item not in seen and item not in chosen_set:
                    chosen.append(item)
                    chosen_set.add(item)
                    if len(chosen) == n:
                        break
        out[u] = chosen
    return out


def cached_negatives(data: SequenceData, protocol: str, seed: int) -> np.ndarray:
    """Negatives for ``sampled-uni100`` / ``sampled-pop100``, drawn once and cached beside
    the prepared dataset (atomic write), so every model is scored on the same candidates."""
    kind = protocol.split("-")[1][:3]
    cache_path = data.stats.get("cache_path")
    path = Path(cache_path) / f"negatives-{kind}{N_SAMPLED_NEGATIVES}-seed{seed}.npy" if cache_path else None
    if path is not None and path.exists():
        try:
            negatives = np.load(path)
            if negatives.shape == (data.n_users, N_SAMPLED_NEGATIVES):
                return negatives
        except (OSError, ValueError):
            pass  # corrupt file: draw again and overwrite
    negatives = sample_negatives(data, kind, seed)
    if path is not None:
        from recboard.datasets.cache import atomic_write_bytes
        import io
        buffer = io.BytesIO()
        np.save(buffer, negatives)
        atomic_write_bytes(path, buffer.getvalue())
    return negatives


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
            yield model.item_vectors() if hasattr(model, "item_vectors") else None
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
        self.protocol = protocol
        self.batch_size = batch_size
        self.seq = torch.as_tensor(left_pad(inputs, max_len), device=device)
        self.target = torch.as_tensor(targets, device=device)
        if protocol == "full":
            # every seen item, not only the last max_len, is masked from the ranking
            self.seen = torch.as_tensor(right_pad(inputs), device=device)
        else:
            negatives = cached_negatives(data, protocol, seed)[users]
            self.candidates = torch.as_tensor(
                np.concatenate([targets[:, None], negatives], axis=1), device=device)

    def __len__(self) -> int:
        return len(self.target)

    def evaluate(self, model, amp_dtype=None) -> dict:
        acc = M.MeanAccumulator()
        with scoring(model, self.seq.device.type, amp_dtype) as vectors:
            for start in range(0, len(self), self.batch_size):
                sl = slice(start, start + self.batch_size)
                batch = SequenceBatch(self.seq[sl], self.target[sl])
                scores = model.score(batch, item_vectors=vectors).float()
                if self.protocol == "full":
                    scores = M.mask_seen(scores, self.seen[sl], batch.target)
                    ranks = M.target_ranks(scores, batch.target)
                else:
                    sampled = scores.gather(1, self.candidates[sl])
                    ranks = M.target_ranks(sampled, torch.zeros_like(batch.target))
                acc.add(M.rank_metrics(ranks))
        return acc.result()


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
    """One split of impressions, padded on the device. Models with the ``impression`` task
    get ``ImpressionBatch``es; ID-based sequence models get the user's click sequence and
    their full-item scores are gathered at the candidates."""

    def __init__(self, data: NewsData, split: str, history_len: int, max_len: int, device,
                 batch_size: int = 512, as_sequence: bool = False):
        block: Impressions = data.valid if split == "valid" else data.test
        self.batch_size = batch_size
        self.as_sequence = as_sequence
        if as_sequence:
            history = left_pad(impression_sequence_inputs(data, split), max_len)
        else:
            history = left_pad([block.history(i) for i in range(len(block))], history_len)
        self.history = torch.as_tensor(history, device=device)
        # impressions are sorted by candidate count so padded batches stay dense
        sizes = np.diff(block.cand_offsets)
        self.order = np.argsort(sizes, kind="stable")
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
        return ImpressionBatch(self.history[torch.as_tensor(index, device=dev)], cands,
                               torch.as_tensor(labels, device=dev, dtype=torch.float32), cands != PAD)

    def evaluate(self, model, amp_dtype=None) -> dict:
        acc = M.MeanAccumulator()
        with scoring(model, self.history.device.type, amp_dtype) as vectors:
            for start in range(0, len(self), self.batch_size):
                batch = self._batch(self.order[start:start + self.batch_size])
                if self.as_sequence:
                    full = model.score(SequenceBatch(batch.history), item_vectors=vectors)
                    scores = full.float().gather(1, batch.candidates)
                else:
                    scores = model.score(batch, item_vectors=vectors).float()
                acc.add(M.impression_metrics(scores, batch.labels, batch.mask))
        return acc.result()


def build_evaluator(data, split: str, cfg, device, as_sequence: bool = False):
    t = cfg.train
    if isinstance(data, NewsData):
        return ImpressionEvaluator(data, split, t.history_len, cfg.max_len, device, t.eval_batch_size, as_sequence)
    return SequenceEvaluator(data, split, cfg.max_len, t.protocol, device, t.eval_batch_size, t.seed)


def training_sequences(data) -> list:
    """What sequence models train on: the leave-one-out training part (SequenceData) or, on
    MIND, each user's history plus clicks in the train split (valid/test stay unseen)."""
    if isinstance(data, NewsData):
        clicks = data.user_clicks([data.train])
        return [np.asarray(v, dtype=np.int64) for _, v in sorted(clicks.items())]
    return data.train_sequences()


def window_sequences(sequences: list, max_len: int) -> np.ndarray:
    """Cut each sequence into non-overlapping windows of ``max_len`` from its end, so long
    histories contribute all their items (not only the last ``max_len``); windows shorter
    than 2 items are dropped. Returns left-padded int64 [n_windows, max_len]."""
    windows = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            windows.append(seq[max(0, end - max_len):end])
            end -= max_len
    return left_pad(windows, max_len)


def impression_training_pairs(block: Impressions) -> tuple:
    """(impression index, clicked news) for every click, plus each impression's negatives
    in ragged form, for npratio sampling each epoch."""
    pos_imp, pos_news, negatives = [], [], []
    for i in range(len(block)):
        cands, labels = block.candidates(i), block.labels(i)
        clicked = cands[labels == 1]
        pos_imp.extend([i] * len(clicked))
        pos_news.extend(clicked.tolist())
        negatives.append(cands[labels == 0])
    neg_offsets, neg_values = to_ragged(negatives)
    return np.asarray(pos_imp, np.int64), np.asarray(pos_news, np.int64), neg_offsets, neg_values
