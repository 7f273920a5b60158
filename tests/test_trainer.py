"""The trainer's state is one record: a checkpoint saves it whole and resuming restores it."""
import dataclasses

import pytest
import torch

from recboard.benchmarks import config as C
from recboard.benchmarks.training.checkpoint import FILE, Checkpointer
from recboard.benchmarks.training.runner import run
from recboard.benchmarks.training.trainer import TrainState
from recboard.datasets.synthetic import generate_sequences

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["epochs=3", "patience=0", "hidden_size=8", "max_len=8", "device=cpu"]


def test_checkpoint_holds_the_whole_train_state(tmp_path):
    data = generate_sequences(n_users=60, n_items=30, min_len=5, max_len=8, seed=0)
    result = run(C.resolve("sasrec", "synthetic_seq", TINY), data=data, tracking=False,
                 checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / FILE, weights_only=False)
    state = TrainState(**saved["train_state"])
    assert set(saved["train_state"]) == {f.name for f in dataclasses.fields(TrainState)}
    assert state.epoch == 3 and [h["epoch"] for h in state.history] == [1, 2, 3]
    assert state.best_epoch == result.best_epoch and state.train_time_s == pytest.approx(result.train_time_s)
    assert state.best_weights is not None and set(state.rng) == {"sampler", "torch", "cuda", "python"}
    assert state.epochs_since_best == 3 - state.best_epoch


def test_resuming_a_finished_run_trains_no_more_and_reports_the_same(tmp_path):
    data = generate_sequences(n_users=60, n_items=30, min_len=5, max_len=8, seed=0)
    cfg = C.resolve("sasrec", "synthetic_seq", TINY)
    first = run(cfg, data=data, tracking=False, checkpoint_dir=tmp_path)
    again = run(cfg, data=data, tracking=False, checkpoint_dir=tmp_path, resume=True)
    assert again.history == first.history and again.test_metrics == first.test_metrics


def test_checkpoint_of_another_format_is_refused_with_advice(tmp_path):
    cfg = C.resolve("sasrec", "synthetic_seq", TINY)
    torch.save({"epoch": 2, "config_digest": "x"}, tmp_path / FILE)
    with pytest.raises(RuntimeError, match=r"another version of recboard \(format 1, expected 2\); delete it"):
        Checkpointer(tmp_path, cfg).load(torch.nn.Linear(1, 1), None)


def test_clip_gradients_takes_sparse_tables_as_their_dense_equivalent():
    from recboard.benchmarks.training.trainer import clip_gradients
    table = torch.nn.Embedding(5, 2, sparse=True)
    bias = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.ModuleDict({"table": table})
    model.register_parameter("bias", bias)
    # row 1 read twice: its gradient is (3, 0) + (3, 0) = (6, 0); row 3 gets (0, 8); bias 0
    weights = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 8.0]])
    ((table(torch.tensor([1, 1, 3])) * weights).sum() + 0 * bias.sum()).backward()
    clip_gradients(model, 5.0)   # norm sqrt(36 + 64) = 10 -> scaled by 1/2
    assert torch.allclose(table.weight.grad.to_dense()[[1, 3]], torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
    assert table.weight.grad.to_dense()[[0, 2, 4]].abs().sum() == 0
