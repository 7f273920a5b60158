"""Planted data, a training loop and the checks every sequence model must pass, shared by
test_bert4rec.py and test_sasrec.py. Each check takes ``build``, a function that makes the
model under test, so the test files keep their own configs and model-specific asserts."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from recboard.datasets.batches import SequenceBatch, SequenceData, left_pad, to_ragged

UNSEEN_ITEMS = [41, 42, 43, 44, 45, 46]   # in ``unseen_item_data()``: never in a training part


def planted_data(n_users=200, n_items=40, seed=0, follow=0.9) -> SequenceData:
    """Each item is followed by its fixed successor with probability ``follow``, otherwise by
    a uniform random item: next-item structure that popularity cannot see."""
    rng = np.random.default_rng(seed)
    successor = rng.permutation(n_items) + 1
    rows = []
    for _ in range(n_users):
        seq = [int(rng.integers(1, n_items + 1))]
        for _ in range(int(rng.integers(8, 20)) - 1):
            seq.append(int(successor[seq[-1] - 1]) if rng.random() < follow else int(rng.integers(1, n_items + 1)))
        rows.append(seq)
    offsets, items = to_ragged(rows)
    return SequenceData("planted", n_items, offsets, items)


def unseen_item_data() -> SequenceData:
    """Items 1..10 in training; 41..45 only ever a user's last two items (valid / test
    targets); 46 never occurs at all."""
    rows = [[1, 2, 3, 41, 42], [4, 5, 6, 7, 43, 41], [8, 9, 10, 44, 45], [1, 3, 5, 2, 4]]
    offsets, items = to_ragged(rows)
    return SequenceData("unseen", 46, offsets, items)


def train(model, data, steps, lr=3e-3, batch_size=32, seed=0) -> list:
    """``steps`` AdamW steps on random batches of the training sequences; the losses."""
    torch.manual_seed(seed)
    seqs = torch.as_tensor(left_pad(data.train_sequences(), model.config.max_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model.loss(SequenceBatch(seqs[torch.randint(0, len(seqs), (batch_size,))]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def assert_reload_gives_identical_scores(build, data, batch_size=32) -> None:
    """A briefly trained ``build()`` model, saved and loaded into a differently initialised
    one, scores exactly as before."""
    torch.manual_seed(0)
    model = build()
    train(model, data, steps=5, batch_size=batch_size)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    torch.manual_seed(1)
    fresh = build()
    batch = SequenceBatch(torch.as_tensor(left_pad(data.train_sequences()[:8], model.config.max_len)))
    fresh.eval(), model.eval()
    assert not torch.allclose(fresh.score(batch)[:, 1:], model.score(batch)[:, 1:])
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh.score(batch), model.score(batch))


def assert_sdpa_matches_eager(build, data, batch_size=32) -> None:
    """``build(attention)`` models with the same weights score and lose alike under both
    attention implementations."""
    torch.manual_seed(0)
    sdpa = build("sdpa")
    train(sdpa, data, steps=3, batch_size=batch_size)
    eager = build("eager")
    eager.load_state_dict(sdpa.state_dict())
    sdpa.eval(), eager.eval()
    batch = SequenceBatch(torch.as_tensor(left_pad(data.train_sequences(), sdpa.config.max_len)))
    assert torch.allclose(sdpa.score(batch)[:, 1:], eager.score(batch)[:, 1:], atol=1e-5)
    # the same seed draws the same random training masks (BERT4Rec) for both
    torch.manual_seed(3)
    loss = sdpa.loss(batch).item()
    torch.manual_seed(3)
    assert loss == pytest.approx(eager.loss(batch).item(), abs=1e-5)


def assert_unseen_items_score_alike(model) -> None:
    """On ``unseen_item_data()``: every unseen item gets the one shared score, and unseen
    items are indistinguishable as inputs."""
    scores = model.score(SequenceBatch(torch.tensor([[1, 2, 41], [1, 2, 46]])))
    assert (scores[:, UNSEEN_ITEMS] == scores[:, [41]]).all()
    assert torch.allclose(scores[0], scores[1], atol=1e-6)


def runner_metrics_vs_pop(model_name: str, sets: list) -> tuple[dict, dict]:
    """Test metrics of ``model_name`` and of popularity, through the project runner (train,
    early-stop on validation, full ranking), on synthetic planted transitions."""
    from recboard.benchmarks.config import resolve
    from recboard.benchmarks.training.runner import run
    from recboard.datasets.synthetic import generate_sequences

    data = generate_sequences(n_users=300, n_items=100, min_len=8, max_len=12, p_next=0.9, seed=1)
    model = run(resolve(model_name, "synthetic_seq", sets), data=data, tracking=False).test_metrics
    pop = run(resolve("pop", "synthetic_seq", ["device=cpu"]), data=data, tracking=False).test_metrics
    return model, pop
