"""Behaviour pinned across refactors: small fixed runs of every route give the test metrics
recorded in ``golden/pinned_metrics.json`` (produced by the code before the harness was
reshaped into routes + trainer, commit 1ca2466). A change that alters them changes results
users have already recorded; if that is intended, regenerate the file and say why."""
import json
from pathlib import Path

import pytest

from recboard.benchmarks.config import resolve
from recboard.benchmarks.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PINNED = json.loads((Path(__file__).parent / "golden" / "pinned_metrics.json").read_text())


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from recboard.datasets.registry import load_dataset
    cache = tmp_path_factory.mktemp("cache")
    return {name: load_dataset(name, cache_dir=cache) for name in ("synthetic_seq", "synthetic_mind")}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_same_seed_same_test_metrics(case, datasets):
    model, dataset, sets = case.split("|")
    result = run(resolve(model, dataset, sets.split(",")), data=datasets[dataset], tracking=False)
    assert result.test_metrics == pytest.approx(PINNED[case], abs=1e-4)
