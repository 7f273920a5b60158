"""GRU4Rec(+) and Caser compute their losses the fast way (see each model's ``loss`` /
``encode``); these tests hold the fast way to the plain one it replaced, written out here
as the oracle: the same losses and the same gradients on a fixed seed. CPU, tiny sizes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recboard.datasets.batches import PAD, ItemCatalog, SequenceBatch
from recboard.models.caser import Caser, CaserConfig
from recboard.models.gru4rec import GRU4Rec, GRU4RecConfig, right_aligned

pytestmark = pytest.mark.usefixtures("one_thread")


def catalog() -> ItemCatalog:
    """40 items seen in training with uneven counts (popularity sampling), 5 never; 10 users."""
    counts = np.array([0, *np.random.default_rng(0).integers(1, 50, 40), 0, 0, 0, 0, 0])
    return ItemCatalog("speed", 45, counts, n_users=10)


def batch(width: int = 12, rows: int = 6) -> SequenceBatch:
    """Left-padded windows of 1..width items (a window of one item has no next item)."""
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, 46, (rows, width), generator=g)
    lengths = torch.randint(1, width + 1, (rows,), generator=g)
    seq[torch.arange(width)[None] < (width - lengths)[:, None]] = PAD
    return SequenceBatch(seq, user=torch.arange(rows))


def loss_and_grads(model, loss_fn, data: SequenceBatch, seed: int = 3):
    model.zero_grad()
    torch.manual_seed(seed)   # the same dropout masks and sampled negatives for both
    loss = loss_fn(data)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def assert_same(fast, plain):
    assert torch.allclose(fast[0], plain[0], rtol=1e-6, atol=1e-6), (fast[0], plain[0])
    for got, expected in zip(fast[1], plain[1]):
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ GRU4Rec(+)

def dense_gru4rec_loss(model: GRU4Rec, data: SequenceBatch) -> torch.Tensor:
    """The loss as first written: every (step, window) of the batch scored against every
    column at once, [T, B, B + n_sample], padding steps included and masked out at the end.
    With dropout, the windows are cut to the longest one as the model cuts them, so both draw
    the same masks; without, the full width checks that cutting changes nothing."""
    cfg = model.config
    rows, lengths = right_aligned(model.item_to_row[data.seq])
    if cfg.dropout_p_embed or cfg.dropout_p_hidden:
        rows = rows[:, :max(int(lengths.max()), 2)]
    targets = rows[:, 1:].T
    hidden = model.hidden_states(rows[:, :-1]).transpose(0, 1)
    scores = hidden @ model.Wy(targets).transpose(1, 2) + model.By(targets).transpose(1, 2)
    T, B = targets.shape
    negative = (targets != PAD)[:, None, :] & ~torch.eye(B, dtype=torch.bool)
    counts = model.row_counts[targets][:, None, :].expand(-1, B, -1)
    if cfg.n_sample:
        sampled = torch.multinomial(model.row_counts[1:model.n_known + 1] ** cfg.sample_alpha, cfg.n_sample,
                                    replacement=True) + 1
        scores = torch.cat([scores, hidden @ model.Wy(sampled).T + model.By(sampled).T], -1)
        negative = torch.cat([negative, negative.new_ones(T, B, len(sampled))], -1)
        counts = torch.cat([counts, (model.row_counts[sampled] ** cfg.sample_alpha).expand(T, B, -1)], -1)
    if cfg.loss == "cross-entropy" and cfg.logq:
        scores = scores - cfg.logq * counts.log()
    positive = torch.arange(B).expand(T, B).reshape(-1)
    flat = model.event_losses(scores.reshape(T * B, -1), positive, negative.reshape(T * B, -1)).view(T, B)
    keep = (targets != PAD) & negative.any(-1)
    return (flat * keep).sum() / keep.sum().clamp(min=1)


@pytest.mark.parametrize("settings", [
    {"loss": "top1"},
    {"loss": "bpr-max", "n_sample": 64},
    {"loss": "bpr-max", "n_sample": 64, "dropout_p_embed": 0.3, "dropout_p_hidden": 0.2},
    {"loss": "bpr-max", "elu_param": 0.0},
    {"loss": "cross-entropy", "n_sample": 32, "logq": 1.0},
    {"loss": "cross-entropy"},
])
def test_gru4rec_scores_only_the_events_and_gets_the_dense_loss(settings):
    torch.manual_seed(0)
    model = GRU4Rec(GRU4RecConfig(hidden_size=8, **settings), catalog())
    data = batch()
    assert_same(loss_and_grads(model, model.loss, data),
                loss_and_grads(model, lambda b: dense_gru4rec_loss(model, b), data))


def test_gru4rec_blocks_of_events_change_nothing(monkeypatch):
    """Events scored a few rows at a time (``in_blocks``) give what one block gives."""
    import recboard.models.gru4rec as module

    torch.manual_seed(0)
    model = GRU4Rec(GRU4RecConfig(hidden_size=8, loss="bpr-max", n_sample=64), catalog())
    data = batch(width=20, rows=8)
    whole = loss_and_grads(model, model.loss, data)
    one_block = module.in_blocks
    monkeypatch.setattr(module, "in_blocks", lambda fn, rows, *tensors: one_block(fn, 3, *tensors))
    assert_same(loss_and_grads(model, model.loss, data), whole)


# ------------------------------------------------------------------ Caser

def conv_caser_encode(model: Caser, rows: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    """Caser's encoder as ``caser.py`` writes it: each filter kind run as a ``conv2d``."""
    image = model.item_embedding(rows)[:, None]                           # [N, 1, L, d]
    features = [model.vertical(image).flatten(1)] if model.vertical is not None else []
    features += [F.relu(conv(image).squeeze(3)).amax(dim=2) for conv in model.horizontal]
    z = F.relu(model.fc1(model.dropout(torch.cat(features, 1))))
    return torch.cat([z, model.user_embedding(users)], 1)


@pytest.mark.parametrize("settings", [
    {},
    {"vertical_filters": 0},
    {"horizontal_filters": 0},
    {"markov_order": 3, "target_count": 1},
])
def test_caser_products_are_its_convolutions(settings, monkeypatch):
    torch.manual_seed(0)
    model = Caser(CaserConfig(hidden_size=8, **settings), catalog())
    data = batch()
    fast = loss_and_grads(model, model.loss, data)
    monkeypatch.setattr(model, "encode", lambda rows, users: conv_caser_encode(model, rows, users))
    assert_same(fast, loss_and_grads(model, model.loss, data))
