"""The POP-counts measurement behind a leaderboard gap sentence scores exactly what
``bench run --model pop`` scores, and then the whole-file variant on the same negatives."""
from __future__ import annotations

import pytest

from recboard.benchmarks.experiments import pop_counts
from recboard.benchmarks.config import resolve
from recboard.benchmarks.training.runner import run
from recboard.datasets.registry import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_counts_reproduce_bench_run_and_whole_file_counts_differ(tmp_path):
    data = load_dataset("synthetic_seq", cache_dir=tmp_path)
    measured = pop_counts.measure("synthetic_seq", "sampled-pop100", seed=7, data=data)
    ran = run(resolve("pop", "synthetic_seq", ["protocol=sampled-pop100", "seed=7", "device=cpu"]), data=data,
              tracking=False)
    assert measured["training counts"] == pytest.approx(ran.test_metrics, abs=1e-12)
    whole = measured["whole-file counts"]
    assert set(whole) == set(ran.test_metrics)
    # the held-out items now count: the ranking, and so the metrics, change
    assert whole != measured["training counts"]
