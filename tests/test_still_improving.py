"""A run that ends while its validation metric is still rising says so: one line on stderr,
the MLflow tag ``recboard.still_improving`` on every run and on a seed group's parent, and
``still_improving`` in the run's result and JSON."""
from __future__ import annotations

import pytest

from recboard.benchmarks import config as C
from recboard.benchmarks.config import TrainConfig
from recboard.benchmarks.training.trainer import TrainState, still_improving

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["hidden_size=8", "num_heads=1", "num_layers=1", "max_len=8", "batch_size=32", "device=cpu"]


def ended(epoch: int, best_epoch: int, patience: int) -> tuple[TrainState, TrainConfig]:
    """The state of a run that trained ``epoch`` epochs, its best at ``best_epoch``."""
    return (TrainState(epoch=epoch, best_epoch=best_epoch, epochs_since_best=epoch - best_epoch),
            TrainConfig(epochs=epoch, patience=patience))


@pytest.mark.parametrize("epoch, best_epoch, patience, improving", [
    (10, 10, 5, True),      # best epoch = last epoch
    (10, 9, 5, True),       # within the last max(2, 5 // 2) = 2 epochs
    (10, 8, 5, False),
    (100, 91, 20, True),    # patience 20: the last 10 epochs
    (100, 90, 20, False),
    (20, 19, 0, True),      # no early stopping: the last 2 epochs
    (20, 18, 0, False),
    (5, 4, 1, False),       # patience 1 ended the run one epoch after its best: a plateau, not a budget
    (8, 3, 5, False),       # early stopping ended it
    (0, 0, 5, False),       # nothing was trained (epochs=0, pop, random)
])
def test_the_rule(epoch, best_epoch, patience, improving):
    assert still_improving(*ended(epoch, best_epoch, patience)) is improving


def test_a_time_limit_ends_a_run_while_improving_too():
    state = TrainState(epoch=4, best_epoch=4, epochs_since_best=0)
    assert still_improving(state, TrainConfig(epochs=200, patience=20, max_train_minutes=1))


def test_a_run_cut_short_is_tagged_and_said_on_stderr(store, data, capsys):
    from recboard.benchmarks.training.runner import run

    # lr 1e-2 on the planted transitions: still rising after 2 epochs
    result = run(C.resolve("sasrec", "synthetic_seq", [*TINY, "epochs=2", "patience=0", "lr=1e-2"]), data=data)
    assert result.best_epoch == 2 and result.still_improving and result.to_json()["still_improving"] is True
    assert store.get_run(result.mlflow_run_id).data.tags["recboard.still_improving"] == "true"
    assert ("recboard: sasrec on synthetic_seq was still improving when training stopped (best epoch 2 of 2, "
            "within the last 2; epochs=2 ended it)") in capsys.readouterr().err


def test_a_run_stopped_early_and_a_counted_model_are_tagged_false(store, data, capsys):
    from recboard.benchmarks.training.runner import run

    # lr 0: the first epoch stays the best, and patience 1 ends the run after the second
    stopped = run(C.resolve("sasrec", "synthetic_seq", [*TINY, "epochs=10", "patience=1", "lr=0"]), data=data)
    counted = run(C.resolve("pop", "synthetic_seq"), data=data)
    assert (stopped.best_epoch, len(stopped.history)) == (1, 2)
    for result in (stopped, counted):
        assert result.still_improving is False
        assert store.get_run(result.mlflow_run_id).data.tags["recboard.still_improving"] == "false"
    assert "still improving" not in capsys.readouterr().err


def test_a_seed_group_is_still_improving_when_any_seed_was(store, data):
    from recboard.benchmarks.experiments.seeds import run_seeds

    group = run_seeds(C.resolve("sasrec", "synthetic_seq", [*TINY, "epochs=2", "patience=0", "lr=1e-2"]),
                      [1, 2], data=data)
    assert group.still_improving and all(r["still_improving"] for r in group.runs)
    assert store.get_run(group.group_run_id).data.tags["recboard.still_improving"] == "true"
    assert group.to_json()["still_improving"] is True
