"""The pieces of BERT4Rec's original recipe (why a row falls short of the paper):
overlapping training windows, the warmup + linear-decay learning rate, last-item-only
training rows, separate attention dropout, and the ``original`` preset that combines them."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recboard.benchmarks import config as C
from recboard.benchmarks.training.routes import window_sequences
from recboard.benchmarks.training.trainer import lr_factor
from recboard.datasets.batches import ItemCatalog
from recboard.models.bert4rec import BERT4Rec, BERT4RecConfig

pytestmark = pytest.mark.usefixtures("one_thread")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_sliding_windows_follow_the_original_code():
    seq = np.arange(1, 251)
    # gen_data_fin.py: starts range(len - max_len, 0, -step) plus 0, every window max_len long
    windows = window_sequences([seq], 200, step=100)
    assert [(w[0], w[-1]) for w in windows] == [(51, 250), (1, 200)]
    windows = window_sequences([seq], 200, step=60)
    assert [(w[0], w[-1]) for w in windows] == [(51, 250), (1, 200)]   # starts 50, then 0 (-10 is past it)
    windows = window_sequences([np.arange(1, 13)], 5, step=3)
    assert [list(w) for w in windows] == [[8, 9, 10, 11, 12], [5, 6, 7, 8, 9], [2, 3, 4, 5, 6], [1, 2, 3, 4, 5]]
    # a sequence that fits is one window either way; step 0 keeps today's non-overlapping cut
    assert window_sequences([np.arange(1, 4)], 5, step=3).tolist() == [[0, 0, 1, 2, 3]]
    assert window_sequences([seq], 200).tolist() == window_sequences([seq], 200, step=0).tolist()
    assert [(w[w > 0][0], w[-1]) for w in window_sequences([seq], 200)] == [(51, 250), (1, 50)]


def test_lr_factor_warms_up_then_decays_linearly_to_zero():
    linear = C.TrainConfig(lr_schedule="linear", warmup_steps=4)
    assert [lr_factor(linear, s, 10) for s in range(11)] == pytest.approx(
        [0, 0.25, 0.5, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    constant = C.TrainConfig(warmup_steps=2)
    assert [lr_factor(constant, s, 10) for s in range(4)] == [0, 0.5, 1.0, 1.0]


def test_the_trainer_sets_the_scheduled_lr_before_every_step(monkeypatch, tmp_path):
    from recboard.benchmarks.training.runner import run

    seen = []
    step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    cfg = C.resolve("bert4rec", "synthetic_seq", ["epochs=2", "max_steps_per_epoch=3", "patience=0", "lr=0.01",
                                                  "lr_schedule=linear", "warmup_steps=2", "device=cpu"])
    run(cfg, cache_dir=tmp_path, tracking=False)
    assert seen == pytest.approx([0.0, 0.005, 0.01 * (1 - 2 / 6), 0.01 * (1 - 3 / 6), 0.01 * (1 - 4 / 6),
                                  0.01 * (1 - 5 / 6)])


def _model(**keys) -> BERT4Rec:
    catalog = ItemCatalog("t", 30, np.ones(31, dtype=np.int64))
    return BERT4Rec(BERT4RecConfig(hidden_size=8, num_heads=2, num_layers=1, max_len=10, mask_ratio=0.5, **keys),
                    catalog)


def _masked_sets(model, seq) -> list:
    positions, chosen = model.mask_positions(seq)
    return [sorted(p[c].tolist()) for p, c in zip(positions, chosen)]


def test_last_item_rows_mask_only_their_last_item():
    seq = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4, 5, 6]] * 200)
    torch.manual_seed(0)
    every = _masked_sets(_model(last_item_fraction=1.0), seq)
    assert every == [[9]] * 200
    torch.manual_seed(0)
    mixed = _masked_sets(_model(last_item_fraction=0.25), seq)
    last_only = sum(rows == [9] for rows in mixed)
    assert 30 <= last_only <= 75                       # ~50 of 200 expected (a row masking 3 is never [9])
    assert all(len(rows) in (1, 3) for rows in mixed)  # round(0.5 * 6) = 3 otherwise
    # off: the random keys are drawn exactly as before the option existed
    torch.manual_seed(0)
    off = _masked_sets(_model(), seq)
    torch.manual_seed(0)
    assert off == _masked_sets(_model(last_item_fraction=0.0), seq)
    assert all(len(rows) == 3 for rows in off)


def test_attention_dropout_is_separate_from_hidden_dropout():
    apart = _model(dropout=0.5, attention_dropout=0.2)
    assert apart.blocks[0].attn.dropout == 0.2 and apart.blocks[0].drop.p == 0.5
    together = _model(dropout=0.3)
    assert together.blocks[0].attn.dropout == 0.3
    with pytest.raises(ValueError, match="'attention_dropout' must be in"):
        _model(attention_dropout=1.0)
    with pytest.raises(ValueError, match="'last_item_fraction' must be in"):
        _model(last_item_fraction=1.5)


def test_bad_schedule_keys_are_config_errors():
    with pytest.raises(C.ConfigError, match="'lr_schedule' must be one of constant, linear"):
        C.resolve("bert4rec", "synthetic_seq", ["lr_schedule=cosine"])
    with pytest.raises(C.ConfigError, match="'window_step' must be >= 0"):
        C.resolve("bert4rec", "synthetic_seq", ["window_step=-1"])


@pytest.mark.realdata
@pytest.mark.parametrize("dataset", ["ml-1m", "beauty"])
def test_original_preset_converts_400k_steps_at_these_window_counts(dataset, tmp_path):
    """The preset's comment does arithmetic on the real data; check it there."""
    from recboard.datasets.registry import load_dataset

    if not (SHARED / dataset).exists():
        pytest.skip(f"{SHARED / dataset} not available")
    cfg = C.resolve("bert4rec", dataset, [], preset="original")
    data = load_dataset(dataset, data_dir=SHARED / dataset, cache_dir=tmp_path)
    windows = window_sequences(data.train_sequences(), cfg.max_len, cfg.train.window_step)
    steps_per_epoch = math.ceil(len(windows) / cfg.train.batch_size)
    assert cfg.train.epochs == round(400_000 / steps_per_epoch)
    assert (cfg.train.lr, cfg.train.lr_schedule, cfg.train.warmup_steps) == (1e-4, "linear", 100)
