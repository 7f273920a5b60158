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
        from recboard.datasets.files import atomic_write_bytes
        buffer = io.BytesIO()
        np.save(buffer, negatives)
        atomic_write_bytes(path, buffer.getvalue())
    return negatives
