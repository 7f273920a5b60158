"""Negative sampling and the pieces every Table 2 baseline of the BERT4Rec paper shares
(``bpr_mf.py``, ``ncf.py``, ``fpmc.py``, ``caser.py``, ``gru4rec.py``).

Items are embedding rows (``layers.item_rows``): 0 padding, 1..K the items seen in
training, K + 1 one shared row for the rest. Negatives are drawn from the known rows only,
as each original code draws from the items of its own training data. The originals of
BPR-MF, NCF and Caser also skip the user's own training items. A batch holds the user's
training window, not the whole history, so by default ``outside(draws, window)`` marks the
draws that are not in the window and the others are left out of the loss (rejection
sampling: the kept negatives are uniform over the items the window lacks). With
``skip_history`` (BPR-MF, NCF, Caser) a model keeps every user's training items
(``history_keys``, from the catalog) and ``unseen`` leaves out the draws among those, as
the originals do: with short windows over long histories the window test lets through
items the user did interact with (ML-1m: 11% of the draws, for windows of 1, 8 or 10
items). It is on in BPR-MF's and NCF's ML-1m presets, where it measured better, and off in
Caser's, where it measured worse.

The user index comes with every batch the harness builds (``SequenceBatch.user``);
``batch_users`` turns a missing one into an error naming the model.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from recboard.datasets.batches import SequenceBatch


def batch_users(batch: SequenceBatch, model_name: str) -> torch.Tensor:
    """[B] user indices of a batch, for a model with a user embedding."""
    if batch.user is None:
        raise ValueError(f"{model_name} has a user embedding: its SequenceBatch needs `user` "
                         "(the dense user index of each row), got None")
    return batch.user


def check_users(n_users: int, model_name: str) -> int:
    """A catalog's ``n_users``, which a user-embedding table needs to be sized."""
    if n_users < 1:
        raise ValueError(f"{model_name} has a user embedding: its ItemCatalog needs n_users >= 1, got {n_users}")
    return int(n_users)


def uniform_rows(n_known: int, shape: tuple, device) -> torch.Tensor:
    """Known item rows (1..n_known) drawn uniformly with replacement (torch's generator,
    so ``torch.manual_seed`` fixes them)."""
    return torch.randint(1, n_known + 1, shape, device=device)


def outside(draws: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """[B, ...] bool: True where ``draws[b, ...]`` is none of the items of ``window[b]``
    ([B, M], padding included; a draw is never padding). Binary search in each sorted
    window row, so no [B, ..., M] comparison is built."""
    ordered = window.sort(dim=1).values
    flat = draws.reshape(len(draws), -1)
    at = torch.searchsorted(ordered, flat).clamp(max=ordered.size(1) - 1)
    return (ordered.gather(1, at) != flat).view_as(draws)


def history_keys(catalog, item_to_row: torch.Tensor) -> torch.Tensor:
    """Sorted ``user * n_rows + row`` of every (user, item of the user's training part),
    ``n_rows = len(item_to_row)``: the pairs ``unseen`` looks draws up in."""
    if catalog.train_history is None:
        raise ValueError(f"skip_history needs the users' training items, but the catalog of {catalog.name} "
                         "has no train_history (only sequence datasets provide it)")
    offsets, items = catalog.train_history
    users = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    rows = item_to_row.cpu().numpy().astype(np.int64)[items]
    return torch.as_tensor(np.unique(users * len(item_to_row) + rows))


def keep_history(model, catalog) -> None:
    """With ``model.config.skip_history``, ``history_keys`` as a buffer of ``model`` that
    checkpoints do not carry: it is rebuilt from the catalog, and ML-20m's would be 160 MB."""
    if model.config.skip_history:
        model.register_buffer("history_keys", history_keys(catalog, model.item_to_row), persistent=False)


def unseen(model, draws: torch.Tensor, window: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    """[B, ...] bool: True where ``draws[b, ...]`` (item rows) is not an item of user
    ``users[b]``: of its training part when the model keeps ``history_keys``, else of its
    window (``outside``)."""
    keys = getattr(model, "history_keys", None)
    if keys is None:
        return outside(draws, window)
    wanted = users.view(-1, *[1] * (draws.dim() - 1)) * len(model.item_to_row) + draws
    at = torch.searchsorted(keys, wanted.reshape(-1)).clamp(max=len(keys) - 1)
    return (keys[at] != wanted.reshape(-1)).view_as(draws)


def masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``keep`` (0 when nothing is kept)."""
    return (values * keep).sum() / keep.sum().clamp(min=1)


def glorot_uniform_(weight: torch.Tensor, fan_in: int, fan_out: int) -> torch.Tensor:
    """U(-s, s), s = sqrt(6 / (fan_in + fan_out)): Keras' default and GRU4Rec's."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)
