"""The data every model and the runner share: two prepared-dataset types and two batch types.

Item/news indices are dense ints. Index 0 is padding everywhere. For news data index 1 is
the shared "unknown news" slot (ids missing from news.tsv); real news start at 2.

* ``SequenceData``: per-user item sequences in time order (ML-1m, Beauty, MIND clicks).
  Leave-one-out by time: the last item is the test target, the second last the validation
  target, everything before is training data.
* ``NewsData``: MIND-style impressions (history of clicked news + candidates with 0/1
  labels) and the news table (titles). ``user_clicks()`` gives each user's click sequence,
  what ID-based sequential models train on when they are scored on MIND impressions.
* ``ItemCatalog``: what a model is built from -- the items it ranks, their text, and how
  often each occurs in the examples the model trains on. The benchmark route that serves
  the model (``recboard.benchmarks.training.routes``) decides what is counted.

These hold numpy arrays only, so training needs neither polars nor the raw files.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

PAD = 0
UNKNOWN_NEWS = 1


def ragged(offsets: np.ndarray, values: np.ndarray, i: int) -> np.ndarray:
    return values[offsets[i]:offsets[i + 1]]


def to_ragged(rows: list) -> tuple[np.ndarray, np.ndarray]:
    """List of int sequences -> (offsets[n+1], concatenated int32 values)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([np.asarray(r, dtype=np.int32) for r in rows]) if rows else np.zeros(0, np.int32)
    return offsets, values.astype(np.int32, copy=False)


@dataclass
class SequenceData:
    """Users' item sequences, time ordered. Items are 1..n_items (0 = padding)."""

    name: str
    n_items: int
    offsets: np.ndarray          # int64 [n_users + 1]
    items: np.ndarray            # int32 [n_interactions]
    item_text: Optional[list] = None   # len n_items + 1, item_text[0] == "" (titles, genres)
    raw_item_ids: Optional[list] = None  # original ids, by index (index 0 = "<pad>")
    stats: dict = field(default_factory=dict)

    task = "sequence"

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    def sequence(self, user: int) -> np.ndarray:
        return ragged(self.offsets, self.items, user)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def train_sequences(self) -> list:
        """Training part of every user: all but the last two items (leave-one-out)."""
        return [self.sequence(u)[:-2] for u in range(self.n_users)]

    def train_part(self) -> tuple[np.ndarray, np.ndarray]:
        """``train_sequences`` as one ragged array: (offsets [n_users + 1], items)."""
        lengths = self.lengths()
        kept = np.maximum(lengths - 2, 0)
        offsets = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(kept, out=offsets[1:])
        position = np.arange(len(self.items)) - np.repeat(self.offsets[:-1], lengths)
        return offsets, self.items[position < np.repeat(kept, lengths)]

    def eval_examples(self, split: str) -> tuple[list, np.ndarray, np.ndarray]:
        """(input sequences, targets, user ids) for ``split`` in {"valid", "test"}.

        Validation predicts the second-last item from everything before it; test predicts
        the last item from everything before it (the validation item included). Users with
        fewer than 3 interactions have no evaluation example.
        """
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        cut = 2 if split == "valid" else 1
        inputs, targets, users = [], [], []
        for u in range(self.n_users):
            seq = self.sequence(u)
            if len(seq) < 3:
                continue
            inputs.append(seq[:-cut])
            targets.append(int(seq[-cut]))
            users.append(u)
        return inputs, np.asarray(targets, dtype=np.int64), np.asarray(users, dtype=np.int64)

    def train_item_counts(self) -> np.ndarray:
        """Interaction counts per item over the training part only ([n_items + 1])."""
        return item_counts([self.train_part()[1]], self.n_items)

    def shape(self) -> dict:
        return {"users": self.n_users, "items": self.n_items, "interactions": int(len(self.items))}

    def identity(self) -> str:
        """A digest of the prepared interactions themselves (not of the files they came
        from): ML-1m read from ratings.dat or from ml-1m.txt shares one identity, another
        Beauty file gets its own. Cached in ``stats["identity"]``."""
        if "identity" not in self.stats:
            self.stats["identity"] = content_digest("sequence", self.n_items, self.offsets, self.items)
        return self.stats["identity"]

    def catalog(self) -> "ItemCatalog":
        """The items, their text and their counts in the training part."""
        history = self.train_part()
        return ItemCatalog(self.name, self.n_items, item_counts([history[1]], self.n_items), self.item_text,
                           self.n_users, train_history=history)


@dataclass
class Impressions:
    """A block of impressions in ragged form; all news as indices into ``NewsData``."""

    user: np.ndarray             # int32 [N]   dense user index (shared across splits)
    time: np.ndarray             # int64 [N]   unix seconds
    hist_offsets: np.ndarray     # int64 [N + 1]
    hist: np.ndarray             # int32       clicked news before the impression
    cand_offsets: np.ndarray     # int64 [N + 1]
    cand: np.ndarray             # int32       candidate news
    label: np.ndarray            # int8        1 = clicked

    def __len__(self) -> int:
        return len(self.user)

    def history(self, i: int) -> np.ndarray:
        return ragged(self.hist_offsets, self.hist, i)

    def candidates(self, i: int) -> np.ndarray:
        return ragged(self.cand_offsets, self.cand, i)

    def labels(self, i: int) -> np.ndarray:
        return ragged(self.cand_offsets, self.label, i)


@dataclass
class NewsData:
    """MIND-style data: news table + impressions split into train / valid / test.

    ``valid`` is the time-last slice of the official train split (used for early stopping);
    ``test`` is the official dev split (MIND's test labels are not public).
    """

    name: str
    news_ids: list               # index -> official id; [0] = "<pad>", [1] = "<unknown>"
    titles: list                 # index -> title ("" for pad / unknown)
    categories: list             # index -> category ("" for pad / unknown)
    train: Impressions
    valid: Impressions
    test: Impressions
    n_users: int
    stats: dict = field(default_factory=dict)

    task = "impression"

    @property
    def n_items(self) -> int:
        """Largest news index (news are 2..n_items, 1 = unknown)."""
        return len(self.news_ids) - 1

    @property
    def item_text(self) -> list:
        return self.titles

    def user_clicks(self, blocks: list | None = None) -> dict:
        """user -> the history field followed by the user's clicks in ``blocks`` (default:
        train + valid), in time order: the input an ID-based sequence model sees on MIND."""
        per_user: dict = {}
        for block in (self.train, self.valid) if blocks is None else blocks:
            for i in np.argsort(block.time, kind="stable"):
                u = int(block.user[i])
                if u not in per_user:
                    per_user[u] = list(block.history(i))
                per_user[u].extend(int(x) for x in block.candidates(i)[block.labels(i) == 1])
        return per_user

    def train_click_sequences(self) -> list:
        """Each user's history plus clicks in the train split (valid/test stay unseen), users
        in index order: what an ID-based sequence model trains on for MIND."""
        return self.train_clicks()[1]

    def train_clicks(self) -> tuple[np.ndarray, list]:
        """(users, ``train_click_sequences()``): the dense index of each sequence's user. Only
        users with a train impression have a sequence, so list position != user index."""
        clicks = sorted(self.user_clicks([self.train]).items())
        return (np.asarray([u for u, _ in clicks], dtype=np.int64),
                [np.asarray(v, dtype=np.int64) for _, v in clicks])

    def train_item_counts(self) -> np.ndarray:
        """Click counts per news over the training impressions (popularity baseline)."""
        return item_counts([self.train.cand[self.train.label == 1]], self.n_items)

    def shape(self) -> dict:
        """Users, news (padding and the unknown slot excluded) and impressions of all splits."""
        return {"users": self.n_users, "items": len(self.news_ids) - 2,
                "interactions": len(self.train) + len(self.valid) + len(self.test)}

    def identity(self) -> str:
        """A digest of the prepared impressions and news ids (see ``SequenceData.identity``)."""
        if "identity" not in self.stats:
            arrays = [getattr(block, f) for block in (self.train, self.valid, self.test)
                      for f in ("user", "time", "hist_offsets", "hist", "cand_offsets", "cand", "label")]
            self.stats["identity"] = content_digest("impression", "\t".join(map(str, self.news_ids)), *arrays)
        return self.stats["identity"]

    def catalog(self) -> "ItemCatalog":
        """The news, their titles and their click counts in the training impressions."""
        return ItemCatalog(self.name, self.n_items, self.train_item_counts(), self.titles, self.n_users)


def content_digest(*parts) -> str:
    """Short sha256 over numbers, strings and arrays (by value, as int64: an int32 and an
    int64 copy of the same data hash alike)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        else:
            h.update(str(part).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def item_counts(sequences: list, n_items: int) -> np.ndarray:
    """Occurrences of every item in ``sequences`` ([n_items + 1], padding counted as 0)."""
    counts = np.zeros(n_items + 1, dtype=np.int64)
    for seq in sequences:
        np.add.at(counts, np.asarray(seq, dtype=np.int64), 1)
    counts[PAD] = 0
    return counts


@dataclass(frozen=True, eq=False)
class ItemCatalog:
    """What a model is built from: ``Model(config, catalog)``.

    ``train_counts`` [n_items + 1]: how often each item occurs in the examples this model
    trains on (0 = never seen in training; popularity ranks by it, ID models give unseen
    items a shared embedding). ``item_text``: titles by index (``[0] == ""``), or None when
    the dataset has no text. ``n_users``: users are 0..n_users - 1 (``SequenceBatch.user``),
    for models with a user embedding; 0 where unknown. ``train_history``: (offsets
    [n_users + 1], items) of every user's training part, for models whose negatives skip
    all of a user's training items; None where the route has none.
    """

    name: str
    n_items: int
    train_counts: np.ndarray
    item_text: Optional[list] = None
    n_users: int = 0
    train_history: Optional[tuple] = None

    def describe(self) -> str:
        return f"{self.name} ({self.n_items:,} items, text: {'yes' if self.item_text is not None else 'no'})"


# --------------------------------------------------------------------------- batches

@dataclass
class SequenceBatch:
    """``seq``: [B, L] item indices, left-padded with 0 (most recent item last).
    ``target``: [B] next item (evaluation only; training batches leave it None and the
    model builds its own objective from ``seq``). ``user``: [B] dense user index of each
    row (the sequence's owner), for models with a user embedding (BPR-MF, NCF, FPMC,
    Caser); models without one ignore it. The harness sets it on training windows and on
    evaluation rows (MIND click sequences scored on impressions: the impression's user);
    None where no user is known."""

    seq: "torch.Tensor"
    target: Optional["torch.Tensor"] = None
    user: Optional["torch.Tensor"] = None


@dataclass
class ImpressionBatch:
    """``history``: [B, H] clicked news, left-padded with 0. ``candidates``: [B, C] news,
    right-padded with 0; ``mask`` [B, C] is True on real candidates; ``labels`` [B, C] 0/1.
    In training batches column 0 is the clicked news and the rest sampled negatives.
    ``user``: [B] dense user index of each impression (set in evaluation, where sequence
    models with a user embedding score impressions), or None."""

    history: "torch.Tensor"
    candidates: "torch.Tensor"
    labels: "torch.Tensor"
    mask: "torch.Tensor"
    user: Optional["torch.Tensor"] = None


def left_pad(rows: list, length: int) -> np.ndarray:
    """Last ``length`` items of each row, left-padded with 0 -> int64 [len(rows), length]."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, row in enumerate(rows):
        row = row[-length:]
        if len(row):
            out[r, length - len(row):] = row
    return out


def right_pad(rows: list, length: int = 0, value: int = 0) -> np.ndarray:
    length = max(length, max((len(r) for r in rows), default=0))
    out = np.full((len(rows), length), value, dtype=np.int64)
    for r, row in enumerate(rows):
        out[r, :len(row)] = row
    return out
