"""``mind_titles_cold``: simulated readers of real MIND titles, cold start.

The generation logic is covered on generated text (categories of unequal size, as MIND's
are); the tests marked ``realdata`` read the MIND sample (``RECBOARD_MIND_DIR``, else
../shared/data/mind-sample) and skip when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recboard.benchmarks import config as C
from recboard.benchmarks.training.runner import run
from recboard.datasets import mind_titles
from recboard.datasets.simulated_news import NewsTable
from recboard.datasets.synthetic import TOPICS

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = {"sports": 200, "finance": 90, "politics": 60, "health": 40, "travel": 30}   # unequal, like MIND's
SMALL = {"n_users": 120, "n_train": 900, "n_test": 300}


def generated_table(seed: int = 0) -> NewsTable:
    """Titles of each category's words, its sizes ``SIZES``."""
    rng = np.random.default_rng(seed)
    titles, categories, numbers = ["", ""], ["", ""], [-1, -1]
    for number, (name, size) in enumerate(SIZES.items()):
        words = TOPICS[name].split()
        titles += [" ".join(rng.choice(words, size=6, replace=False)) for _ in range(size)]
        categories += [name] * size
        numbers += [number] * size
    return NewsTable(["<pad>", "<unknown>", *[f"N{i}" for i in range(len(titles) - 2)]], titles, categories,
                     np.array(numbers, dtype=np.int64))


def trained_on(data) -> set:
    """Every news a model trains on: training impressions and every history field."""
    return set(np.concatenate([data.train.hist, data.train.cand, data.valid.hist, data.test.hist]).tolist())


def check_cold_start(data) -> None:
    seen = trained_on(data)
    valid, test = set(data.valid.cand.tolist()), set(data.test.cand.tolist())
    assert not (valid & seen) and not (test & seen) and not (valid & test)
    assert data.stats["test_candidates_unseen_in_training"] == 1.0


def test_generated_shape_and_cold_start():
    data = mind_titles.generate(generated_table(), {}, name="mind_titles_cold", **SMALL)
    assert (data.n_users, len(data.news_ids) - 2) == (120, sum(SIZES.values()))
    assert (len(data.train), len(data.valid), len(data.test)) == (810, 90, 300)
    for block in (data.train, data.valid, data.test):
        assert all(block.labels(i).sum() >= 1 for i in range(len(block)))
    check_cold_start(data)


def category_shares(data, category_of) -> np.ndarray:
    """Each category's share of the news shown in every split."""
    shown = np.concatenate([data.train.cand, data.valid.cand, data.test.cand])
    return np.bincount(category_of[shown], minlength=len(SIZES)) / len(shown)


def test_every_category_is_shown_alike_whatever_its_size():
    """Drawn by category, a category of 200 news is shown about as often as one of 30, so a
    news' category size says nothing about its clicks; drawn by news (synthetic_mind's equal
    topics), the big category would be shown ~7x as often."""
    from recboard.datasets.simulated_news import simulate_readers

    table = generated_table()
    balanced = category_shares(mind_titles.generate(table, {}), table.category_of)
    by_news = category_shares(simulate_readers("x", table, np.random.default_rng(0), n_users=400, n_train=3000,
                                               n_test=800, cold_start=True, balanced=False, extra_stats={}),
                              table.category_of)
    assert balanced.max() / balanced.min() < 1.5, balanced
    assert by_news.max() / by_news.min() > 3, by_news


def test_popularity_and_ids_can_only_tie(tmp_path):
    data = mind_titles.generate(generated_table(), {}, **SMALL)
    pop = run(C.resolve("pop", "mind_titles_cold", ["device=cpu"]), data=data, tracking=False)
    ids = run(C.resolve("sasrec", "mind_titles_cold", ["device=cpu", "epochs=1", "hidden_size=8", "max_len=10"]),
              data=data, tracking=False)
    assert pop.test_metrics["AUC"] == 0.5 and ids.test_metrics["AUC"] == 0.5


def write_news(folder: Path, rows: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{news_id}\t{category}\tsub\t{title}\tabstract\turl\t[]\t[]" for news_id, category, title in rows]
    (folder / "news.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "news.tsv"


def test_news_table_leaves_out_rare_categories_and_empty_titles(tmp_path, monkeypatch):
    rows = [(f"N{i}", "sports" if i < 40 else "kids" if i < 43 else "finance", f"team wins game {i}")
            for i in range(80)]
    rows[5] = ("N5", "sports", "")
    write_news(tmp_path / "MINDsmall_train", rows)
    write_news(tmp_path / "MINDsmall_dev", rows[:10])
    paths = mind_titles.source_files("mind_titles_cold", tmp_path)
    assert [p.parent.name for p in paths] == ["MINDsmall_train", "MINDsmall_dev"]
    table, facts = mind_titles.read_news_table(paths)
    assert sorted(set(table.categories[2:])) == ["finance", "sports"] and len(table.titles) == 2 + 76
    assert facts["news_left_out"] == 4 and facts["categories"] == 2
    assert facts["title_words_shared"] == 1.0   # "team wins game" is every title's
    monkeypatch.setattr(mind_titles, "MAX_NEWS", 50)
    capped, _ = mind_titles.read_news_table(paths)
    assert len(capped.news_ids) == 52 and capped.news_ids[2:] == sorted(capped.news_ids[2:], key=table.news_ids.index)


def test_missing_files_name_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="RECBOARD_MIND_DIR"):
        mind_titles.source_files("mind_titles_cold", tmp_path)


# --------------------------------------------------------------------------- the MIND sample

def mind_sample() -> Path:
    folder = Path(os.environ.get("RECBOARD_MIND_DIR")
                  or Path(__file__).resolve().parents[2] / "shared" / "data" / "mind-sample")
    try:
        mind_titles.source_files("mind_titles_cold", folder)
    except FileNotFoundError:
        pytest.skip(f"no MIND news.tsv in {folder}")
    return folder


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from recboard.datasets.registry import load_dataset
    return load_dataset("mind_titles_cold", data_dir=mind_sample(), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.realdata
def test_real_titles_shape_and_cold_start(real):
    s = real.stats
    assert (s["users"], s["news"], s["categories"], s["news_left_out"]) == (400, 1979, 13, 21)
    assert (s["train_impressions"], s["valid_impressions"], s["test_impressions"]) == (2700, 300, 800)
    assert s["title_words_shared"] > 0.5   # a preference's words are not its own
    assert all(real.titles[2:]) and "kids" not in real.categories
    check_cold_start(real)


@pytest.mark.realdata
def test_a_title_model_beats_popularity_on_real_titles(real):
    """100 steps of a small NRMS-GloVe (~10 s on a 2-core CPU) already read taste from titles."""
    small = ["device=cpu", "epochs=1", "max_steps_per_epoch=100", "lr=1e-3", "history_len=20", "heads=4",
             "head_dim=8", "query_dim=32"]
    pop = run(C.resolve("pop", "mind_titles_cold", ["device=cpu"]), data=real, tracking=False)
    nrms = run(C.resolve("nrms_glove", "mind_titles_cold", small), data=real, tracking=False)
    assert pop.test_metrics["AUC"] == 0.5
    assert nrms.test_metrics["AUC"] > 0.55, nrms.test_metrics
