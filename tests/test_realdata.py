"""Adapters on the real public files in ../shared/data (skipped when absent)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recboard.datasets import beauty, mind, movielens
from recboard.datasets.batches import UNKNOWN_NEWS
from recboard.datasets.cache import load_or_build

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.realdata


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def test_ml1m_matches_bert4rec_counts(tmp_path):
    d = need(SHARED / "ml-1m")
    data = load_or_build("ml-1m", movielens, d, tmp_path, False)
    assert (data.n_users, data.n_items) == (6040, 3416)
    assert data.stats["interactions"] == 999_611 and data.stats["dropped_items"] == 290
    assert data.lengths().min() >= 5
    # user 1's first line in ml-1m.txt is movie 3186 (it has >= 5 ratings, so it is kept)
    assert data.raw_item_ids[data.sequence(0)[0]] == 3186
    assert data.item_text[data.raw_item_ids.index(1)] == "Toy Story (1995) | Animation, Children's, Comedy"
    assert len(data.stats["fingerprint"]) == 64


def test_beauty_matches_bert4rec_counts(tmp_path):
    d = need(SHARED / "beauty")
    data = beauty.build("beauty", d, download=False)
    assert (data.n_users, data.n_items, data.stats["interactions"]) == (40226, 54542, 353_962)
    assert data.raw_item_ids[1:4] == [1, 2, 3]              # BERT4Rec's ids are already dense
    inputs, targets, _ = data.eval_examples("test")
    assert len(targets) == 40226 and targets.min() >= 1 and targets.max() <= 54542


def test_mind_sample_parses_and_counts_missing_news(tmp_path):
    d = need(SHARED / "mind-sample")
    data = load_or_build("mind_small", mind, d, tmp_path, False)
    s = data.stats
    assert s["news"] == 2000 and len(data.news_ids) == 2002
    assert (s["train_impressions"], s["valid_impressions"], s["test_impressions"]) == (3600, 400, 1000)
    # most ids referenced by behaviors are not in this cut of news.tsv: counted, not fatal
    assert s["missing_news_ids"] > 10_000 and s["missing_news_refs"] > 100_000
    refs = np.concatenate([b.hist for b in (data.train, data.valid, data.test)]
                          + [b.cand for b in (data.train, data.valid, data.test)])
    assert int((refs == UNKNOWN_NEWS).sum()) == s["missing_news_refs"]
    assert data.valid.time.min() >= data.train.time.max()
    for block in (data.train, data.valid, data.test):
        assert all(block.labels(i).sum() >= 1 for i in range(len(block)))
    assert 0 < s["users"] == data.n_users and data.titles[2] and data.categories[2]
    clicks = data.train_click_sequences()
    assert len(clicks) > 0 and max(int(c.max()) for c in clicks if len(c)) <= data.n_items


def test_nrms_trains_and_evaluates_end_to_end_on_the_real_mind_sample(tmp_path, capsys):
    """Most news ids of the sample are missing from its news.tsv: the run must still train,
    score every dev impression and report the missing news."""
    from recboard.benchmarks import config as C
    from recboard.benchmarks.training.runner import run
    from recboard.datasets.registry import load_dataset

    data = load_dataset("mind_small", data_dir=need(SHARED / "mind-sample"), cache_dir=tmp_path / "cache")
    cfg = C.resolve("nrms_glove", "mind_small", ["epochs=1", "max_steps_per_epoch=5", "batch_size=16"])
    result = run(cfg, data=data, tracking=False)
    assert "are not in news.tsv" in capsys.readouterr().err
    assert set(result.test_metrics) == {"AUC", "MRR", "nDCG@5", "nDCG@10"}
    assert 0.0 < result.test_metrics["AUC"] < 1.0
    assert result.stats["missing_news_ids"] > 0
