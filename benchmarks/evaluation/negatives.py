"""Negatives of the sampled protocols (``sampled-uni100``, ``sampled-pop100``): for every user,
100 items they never interacted with, drawn once (uniformly, or by popularity as in the
BERT4Rec paper's code) and cached beside the prepared dataset, so every model is scored on
the same candidates.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from recboard.datasets.batches import SequenceData

N_SAMPLED_NEGATIVES = 100


def sample_negatives(data: SequenceData, kind: str, seed: int, n: int = N_SAMPLED_NEGATIVES) -> np.ndarray:
    """[n_users, n] negatives per user, never an item the user interacted with.

    ``kind`` "uni": uniform over items; "pop": proportional to interaction counts over the
    whole dataset (as in the BERT4Rec paper's code).

    The draw is defined one user after another: from one ``default_rng(seed)`` stream each
    user takes blocks of ``2 n`` items (``rng.choice`` with ``p``) and keeps, in order, the
    first ``n`` distinct ones they never interacted with (``reference_negatives`` is that
    loop). Here it is computed for many users at once: ``choice`` searches uniforms in the
    cumulative ``p``, so the stream is a sequence of blocks drawn in a few large calls, and
    user ``u`` reads the blocks after the ones the users before it took. Most users need one
    block: a run of such users is checked in one vectorised step, and the rare user who needs
    more (it has seen most popular items) is drawn alone. The result is the loop's, bit for
    bit (a test checks), so cached negatives and the records scored on them stay valid.
    """
    n_items, block = data.n_items, 2 * n
    p = negative_weights(data, kind)
    seen_keys = np.sort(np.repeat(np.arange(data.n_users, dtype=np.int64), data.lengths()) * (n_items + 1)
                        + data.items.astype(np.int64))
    left = int((p > 0).sum()) - np.bincount(seen_keys // (n_items + 1), weights=p[seen_keys % (n_items + 1)] > 0,
                                            minlength=data.n_users)
    if (left < n).any():
        u = int(np.flatnonzero(left < n)[0])
        raise ValueError(f"user {u} has seen {len(set(data.sequence(u).tolist()))} of {n_items} items: fewer than "
                         f"{n} negatives left to sample ({kind})")
    stream = BlockStream(np.random.default_rng(seed), p, block)
    out = np.zeros((data.n_users, n), dtype=np.int64)
    user, at, run = 0, 0, 64
    while user < data.n_users:
        users = np.arange(user, min(user + run, data.n_users))
        drawn, order, ordered, first = stream.blocks(at, len(users))
        # each row's items in sorted order make the (user, item) keys one ascending run, so
        # the search in the seen pairs walks forward instead of jumping across them
        seen_sorted = contains(seen_keys, users[:, None] * (n_items + 1) + ordered.astype(np.int64))
        seen = np.empty_like(seen_sorted)
        np.put_along_axis(seen, order, seen_sorted, axis=1)
        keep = first & ~seen
        enough = keep.sum(axis=1) >= n
        done = len(users) if enough.all() else int(np.argmin(enough))
        taken = keep[:done] & (np.cumsum(keep[:done], axis=1) <= n)
        out[user:user + done] = drawn[:done][taken].reshape(done, n)
        user, at = user + done, at + done
        run = int(np.clip(2 * done, 64, 8192))   # long runs of one-block users: larger steps
        if done < len(users):   # this user reads blocks until it has n negatives
            out[user], used = stream.one_user(at, n, data.sequence(user))
            user, at = user + 1, at + used
    return out


class BlockStream:
    """The blocks of ``2 n`` items one ``rng`` yields in turn (``rng.choice(size=2 n, p=p)``
    each), drawn ahead in large calls, with each block's sort order, its items sorted, and
    its first occurrences of an item. Blocks before the one last asked for are dropped when
    more are drawn: readers only move forward."""

    AHEAD = 8192   # blocks drawn at least per call (a block of 2 n items: its order fits int16 for n < 16,384)

    def __init__(self, rng: np.random.Generator, p: np.ndarray, block: int):
        self.rng, self.block = rng, block
        self.cdf = p.cumsum()
        self.cdf /= self.cdf[-1]   # as Generator.choice normalises it
        self.base = 0              # the stream index of self.parts' first block
        self.parts = [np.zeros((0, block), dtype=dtype) for dtype in (np.int32, np.int16, np.int32, bool)]

    def blocks(self, start: int, count: int) -> tuple:
        """(items, order, sorted items, first occurrences), each [count, 2 n], of blocks
        ``start`` .. ``start + count - 1`` (``start`` never before an earlier call's)."""
        end = self.base + len(self.parts[0])
        if start + count > end:
            more = max(start + count - end, self.AHEAD)
            drawn = self.cdf.searchsorted(self.rng.random(more * self.block), side="right").reshape(more, self.block)
            order, ordered = sort_rows(drawn)
            new = (drawn.astype(np.int32), order.astype(np.int16), ordered.astype(np.int32),
                   first_occurrences(drawn, order, ordered))
            self.parts = [np.concatenate([old[start - self.base:], part]) for old, part in zip(self.parts, new)]
            self.base = start
        offset = start - self.base
        return tuple(part[offset:offset + count] for part in self.parts)

    def one_user(self, start: int, n: int, history: np.ndarray) -> tuple[np.ndarray, int]:
        """The negatives of a user whose blocks begin at ``start`` and who needs more than
        one: the loop's rule (items in order, kept when unseen and new, until ``n``) over 2, 4,
        8, ... blocks at once; (the items, the number of blocks the loop would have read)."""
        seen = np.zeros(len(self.cdf), dtype=bool)
        seen[history] = True
        count = 2
        while True:
            items = self.blocks(start, count)[0].ravel()
            keep = ~seen[items]
            keep[keep] = first_occurrences(items[keep][None, :])[0]
            kept = np.cumsum(keep)
            if kept[-1] >= n:
                last = int(np.searchsorted(kept, n))   # where the n-th negative is found
                return items[keep & (kept <= n)], last // self.block + 1
            count *= 2


def negative_weights(data: SequenceData, kind: str) -> np.ndarray:
    """Sampling weights over item indices 0..n_items (0, padding, never drawn)."""
    if kind == "pop":
        counts = np.bincount(data.items, minlength=data.n_items + 1).astype(np.float64)
        counts[0] = 0
        return counts / counts.sum()
    if kind == "uni":
        p = np.full(data.n_items + 1, 1.0 / data.n_items)
        p[0] = 0
        return p
    raise ValueError(f"negative sampling kind must be 'uni' or 'pop', got {kind!r}")


def contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.isin`` for a sorted array, without sorting it again on every call."""
    at = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def sort_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stable argsort of each row, the rows sorted)."""
    order = np.argsort(rows, axis=1, kind="stable")
    return order, np.take_along_axis(rows, order, axis=1)


def first_occurrences(rows: np.ndarray, order=None, ordered=None) -> np.ndarray:
    """[m, k] -> bool [m, k], True where a value appears in its row for the first time
    (``order`` / ``ordered``: the rows' ``sort_rows``, when already known)."""
    if order is None:
        order, ordered = sort_rows(rows)
    repeat = np.zeros_like(rows, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = np.empty_like(repeat)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first


def loop_user(blocks, n: int, seen: set, block: int) -> tuple[np.ndarray, int]:
    """One user's negatives as the draw defines them: items of successive blocks, in order,
    until ``n`` distinct unseen ones (the rest of that block is skipped); (the items, the
    number of blocks read). ``blocks`` yields lists of ``block`` items."""
    chosen: list = []
    chosen_set: set = set()
    used = 0
    while len(chosen) < n:
        used += 1
        for item in next(blocks):
            if item not in seen and item not in chosen_set:
                chosen.append(item)
                chosen_set.add(item)
                if len(chosen) == n:
                    break
    return np.asarray(chosen, dtype=np.int64), used


def reference_negatives(data: SequenceData, kind: str, seed: int, n: int = N_SAMPLED_NEGATIVES) -> np.ndarray:
    """The definition ``sample_negatives`` computes faster: every user in turn, drawing its
    blocks from one stream with ``rng.choice``."""
    rng = np.random.default_rng(seed)
    p = negative_weights(data, kind)
    blocks = iter(lambda: rng.choice(len(p), size=2 * n, p=p).tolist(), None)
    return np.stack([loop_user(blocks, n, set(data.sequence(u).tolist()), 2 * n)[0] for u in range(data.n_users)])


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
        from recboard.datasets.files import atomic_write_bytes
        buffer = io.BytesIO()
        np.save(buffer, negatives)
        atomic_write_bytes(path, buffer.getvalue())
    return negatives
