"""Routes: the three ways a model can serve a prepared dataset, one object each.

* ``SequenceRoute``: sequence data (ML-1m, Beauty, synthetic_seq) and a model with the
  ``sequence`` task. Trains on windows of each user's training part (leave-one-out), scored
  by full ranking (seen items masked) or a sampled protocol.
* ``ImpressionRoute``: news data (MIND) and a model with the ``impression`` task (NRMS,
  pop, random). Trains on every click with ``npratio`` negatives from its own impression,
  scored per impression (AUC, MRR, nDCG@5/10).
* ``ClickSequenceRoute``: news data and an ID sequence model (BERT4Rec, SASRec). Trains on
  each user's click sequence (history + train clicks), scored on the same impressions as
  NRMS by gathering its full-item scores at each impression's candidates.

A route owns what differs between them: the ``ItemCatalog`` its model is built from (which
interactions count as "seen in training"), the training batches, and the evaluator of a
split. ``route_for`` is the one check that a model can serve a dataset; the model's tasks
come from its registry entry, so the check needs no model instance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recboard.benchmarks import distributed as D
from recboard.benchmarks.evaluation.evaluators import ImpressionEvaluator, SequenceEvaluator, impression_sequence_inputs
from recboard.datasets.batches import (ImpressionBatch, Impressions, ItemCatalog, NewsData, SequenceBatch,
                                       SequenceData, item_counts, left_pad, to_ragged)


class IncompatibleModelError(ValueError):
    pass


# ------------------------------------------------------------------ training batches

def window_sequences(sequences: list, max_len: int, step: int = 0) -> np.ndarray:
    """Training windows of each sequence, so long histories contribute all their items (not
    only the last ``max_len``). Returns left-padded int64 [n_windows, max_len].

    ``step`` 0: non-overlapping windows of ``max_len`` cut from the end, the earliest one
    shorter; windows of fewer than 2 items are dropped. ``step`` > 0: BERT4Rec's original
    sliding window (``gen_data_fin.py``, ``prop_sliding_window``): a sequence longer than
    ``max_len`` gives windows starting every ``step`` items back from its end, plus one
    starting at its first item, all ``max_len`` long (ML-1m used step 100 of 200, Beauty 5 of 50)."""
    return user_windows(sequences, max_len, step)[0]


def user_windows(sequences: list, max_len: int, step: int = 0, users=None) -> tuple[np.ndarray, np.ndarray]:
    """``window_sequences`` and the owner of each window: int64 [n_windows], ``users[i]`` for
    the windows of ``sequences[i]`` (default: i, sequences in user index order)."""
    windows, owners = [], []
    for i, seq in enumerate(sequences):
        if step and len(seq) > max_len:
            cut = [seq[start:start + max_len] for start in [*range(len(seq) - max_len, 0, -step), 0]]
        else:
            cut = [seq[max(0, end - max_len):end] for end in range(len(seq), 1, -max_len)]
        windows += cut
        owners += [i if users is None else users[i]] * len(cut)
    return left_pad(windows, max_len), np.asarray(owners, dtype=np.int64)


def history_fields(block: Impressions, history_len: int) -> np.ndarray:
    """Every impression's clicked-news history, the last ``history_len``, left-padded."""
    return left_pad([block.history(i) for i in range(len(block))], history_len)


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


class TrainingBatches:
    """Training examples kept on the device; each epoch draws a shuffled pass over them.
    Subclasses say what one example is (``size``) and how a batch of them is built."""

    size: int

    def __init__(self, train):
        """``train``: the run's ``TrainConfig`` (batch size, steps per epoch, ...)."""
        self.batch_size, self.max_steps = train.batch_size, train.max_steps_per_epoch

    def steps_per_epoch(self) -> int:
        steps = math.ceil(self.size / self.batch_size)
        return min(steps, self.max_steps) if self.max_steps else steps

    def epoch(self, rng: np.random.Generator):
        order = rng.permutation(self.size)
        for step in range(self.steps_per_epoch()):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield self.batch(index[D.shard(len(index))], rng)  # torchrun: each rank its slice

    def batch(self, index: np.ndarray, rng: np.random.Generator):
        raise NotImplementedError


class SequenceBatches(TrainingBatches):
    """Left-padded windows of training sequences, each with its user (``users[i]`` owns
    ``sequences[i]``; default: sequences in user index order); the model builds its
    objective from them."""

    def __init__(self, sequences: list, max_len: int, train, device, users=None):
        super().__init__(train)
        windows, owners = user_windows(sequences, max_len, train.window_step, users)
        self.windows = torch.as_tensor(windows, device=device)
        self.users = torch.as_tensor(owners, device=device)
        self.size = len(self.windows)

    def batch(self, index, rng) -> SequenceBatch:
        index = torch.as_tensor(index, device=self.windows.device)
        return SequenceBatch(self.windows[index], user=self.users[index])


class ImpressionBatches(TrainingBatches):
    """Each click with ``npratio`` negatives drawn from its own impression (with replacement
    when it has fewer; an impression without negatives borrows random news ids from other
    impressions' negatives). Column 0 of every batch is the click."""

    def __init__(self, block: Impressions, train, device):
        super().__init__(train)
        self.pos_imp, self.pos_news, self.neg_offsets, self.neg_values = impression_training_pairs(block)
        self.history = torch.as_tensor(history_fields(block, train.history_len), device=device)
        self.npratio, self.device, self.size = train.npratio, device, len(self.pos_news)

    def batch(self, index, rng) -> ImpressionBatch:
        imp = self.pos_imp[index]
        start, count = self.neg_offsets[imp], np.diff(self.neg_offsets)[imp]
        draw = (rng.random((len(index), self.npratio)) * np.maximum(count, 1)[:, None]).astype(np.int64)
        picks = np.where(count[:, None] > 0, start[:, None] + draw,
                         rng.integers(0, max(len(self.neg_values), 1), (len(index), self.npratio)))
        negatives = self.neg_values[picks] if len(self.neg_values) else np.ones_like(picks)
        candidates = torch.as_tensor(np.concatenate([self.pos_news[index, None], negatives], axis=1),
                                     device=self.device)
        labels = torch.zeros(candidates.shape, dtype=torch.float32, device=self.device)
        labels[:, 0] = 1
        return ImpressionBatch(self.history[torch.as_tensor(imp, device=self.device)], candidates, labels,
                               torch.ones(candidates.shape, dtype=torch.bool, device=self.device))


# ------------------------------------------------------------------ routes

@dataclass
class SequenceRoute:
    """Sequence data, a model with the ``sequence`` task: leave-one-out next-item ranking."""

    data: SequenceData
    name = "sequence"

    def catalog(self) -> ItemCatalog:
        return self.data.catalog()   # counts over the training part of every sequence

    def training_batches(self, cfg, device) -> TrainingBatches:
        return SequenceBatches(self.data.train_sequences(), cfg.max_len, cfg.train, device)

    def evaluator(self, split: str, cfg, device) -> SequenceEvaluator:
        t = cfg.train
        return SequenceEvaluator(self.data, split, cfg.max_len, t.protocol, device, t.eval_batch_size, t.seed)


def score_impressions(model, batch: ImpressionBatch, item_vectors) -> torch.Tensor:
    return model.score(batch, item_vectors=item_vectors).float()


def score_impressions_through_sequence(model, batch: ImpressionBatch, item_vectors) -> torch.Tensor:
    """The next-item scores after the user's click sequence, read at the candidates."""
    full = model.score(SequenceBatch(batch.history, user=batch.user), item_vectors=item_vectors)
    return full.float().gather(1, batch.candidates)


@dataclass
class ImpressionRoute:
    """News data, a model with the ``impression`` task: click-vs-shown ranking per impression."""

    data: NewsData
    name = "impression"

    def catalog(self) -> ItemCatalog:
        return self.data.catalog()   # click counts over the training impressions

    def training_batches(self, cfg, device) -> TrainingBatches:
        return ImpressionBatches(self.data.train, cfg.train, device)

    def evaluator(self, split: str, cfg, device) -> ImpressionEvaluator:
        block = self.data.valid if split == "valid" else self.data.test
        return ImpressionEvaluator(block, history_fields(block, cfg.train.history_len), score_impressions, device,
                                   cfg.train.eval_batch_size)


@dataclass
class ClickSequenceRoute:
    """News data, an ID sequence model: trained on click sequences, scored on impressions."""

    data: NewsData
    name = "click-sequence"

    def catalog(self) -> ItemCatalog:
        """Counts over the click sequences the model trains on, so a news read only in a
        history field still gets an embedding of its own."""
        counts = item_counts(self.data.train_click_sequences(), self.data.n_items)
        return ItemCatalog(self.data.name, self.data.n_items, counts, self.data.titles, self.data.n_users)

    def training_batches(self, cfg, device) -> TrainingBatches:
        users, sequences = self.data.train_clicks()
        return SequenceBatches(sequences, cfg.max_len, cfg.train, device, users)

    def evaluator(self, split: str, cfg, device) -> ImpressionEvaluator:
        block = self.data.valid if split == "valid" else self.data.test
        history = left_pad(impression_sequence_inputs(self.data, split), cfg.max_len)
        return ImpressionEvaluator(block, history, score_impressions_through_sequence, device,
                                   cfg.train.eval_batch_size)


Route = SequenceRoute | ImpressionRoute | ClickSequenceRoute


def route_for(model_name: str, data) -> Route:
    """The route on which ``model_name`` serves ``data``; a clear error when there is none."""
    from recboard.models.registry import model_spec

    tasks = model_spec(model_name).tasks
    if isinstance(data, NewsData):
        if "impression" in tasks:
            return ImpressionRoute(data)
        if "sequence" in tasks:
            return ClickSequenceRoute(data)
    elif isinstance(data, SequenceData) and "sequence" in tasks:
        return SequenceRoute(data)
    raise IncompatibleModelError(f"model {model_name!r} (tasks: {', '.join(tasks)}) cannot serve dataset "
                                 f"{data.name!r} ({type(data).__name__}, task {data.task!r})")
