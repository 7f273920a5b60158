"""The scale benchmark's parts on its tiny shape, in this process: the generated GroupLens
file has the shape's properties, every figure is measured and the report shows the ratios."""
from __future__ import annotations

import pytest

pl = pytest.importorskip("polars")

from recboard.benchmarks.speed import scale  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_generated_ratings_look_like_grouplens(tmp_path):
    path = tmp_path / "ratings.csv"
    rows = scale.generate_ratings(path, users=120, items=300, ratings=9_000)
    assert path.read_text().splitlines()[0] == "userId,movieId,rating,timestamp"
    frame = pl.read_csv(path)
    assert frame.height == rows and 0.7 * 9_000 <= rows <= 9_000   # repeats of a (user, movie) draw dropped
    per_user = frame.group_by("userId").len()
    assert per_user.height == 120 and per_user["len"].min() >= scale.MIN_RATINGS
    assert frame.select(pl.struct("userId", "movieId").is_unique().all()).item(), "a movie rated twice"
    ordered = frame.group_by("userId", maintain_order=True).agg(pl.col("timestamp").diff().min().alias("step"))
    assert ordered["step"].min() >= 0, "ratings out of time order within a user"
    assert set(frame["rating"].unique().to_list()) <= {x / 2 for x in range(1, 11)}
    assert frame["movieId"].min() >= 1 and frame["movieId"].max() <= 300


def test_every_figure_is_measured_and_reported(tmp_path):
    users, items, ratings = scale.SHAPES["tiny"]
    data_dir, cache_dir = tmp_path / "data", tmp_path / "cache"
    scale.generate_ratings(data_dir / "ratings.csv", users, items, ratings)
    results = {phase: scale.run_phase(phase, data_dir, cache_dir, max_steps=2) for phase in scale.PHASES}
    assert results["prepare"]["users"] == users and results["load"]["interactions"] == results["prepare"]["interactions"]
    assert results["full_ranking"]["users"] == users and 0 <= results["full_ranking"]["NDCG@10"] <= 1
    for model in ("sasrec", "bpr_mf"):
        r = results[model]
        assert r["steps"] == 2 and r["epoch_steps"] > 2 and r["estimated"]
    assert all(r["seconds"] >= 0 and r["peak_gb"] > 0 for r in results.values())
    text = scale.report(["tiny", "tiny2"], {"tiny": results, "tiny2": results})
    assert "| SASRec epoch (s)" in text and "(est.)" in text and "1.0x" in text


def test_generated_mind_folders_read_as_mind_with_the_shape_asked_for(tmp_path):
    from recboard.benchmarks.speed.mind_shape import MIND_SHAPES, generate_mind
    from recboard.datasets.registry import load_dataset

    users, news, train, dev = MIND_SHAPES["mind-tiny"]
    generate_mind(tmp_path / "data", "mind-tiny")
    lines = (tmp_path / "data" / "train" / "behaviors.tsv").read_text().splitlines()
    assert len(lines) == train
    history_of = {}
    for line in lines:
        _, user, _, history, shown = line.split("\t")
        candidates = [token.rsplit("-", 1) for token in shown.split()]
        assert len({c for c, _ in candidates}) == len(candidates), "a news shown twice in one impression"
        assert 1 <= sum(label == "1" for _, label in candidates) <= 2
        assert history_of.setdefault(user, history) == history, "a user's history changed within the split"
    data = load_dataset("mind_large", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    stats = data.stats
    assert stats["news"] == news and stats["missing_news_refs"] == 0   # every referenced news is in a news.tsv
    assert stats["train_impressions"] + stats["valid_impressions"] == train and stats["test_impressions"] == dev
    assert 0.8 * users <= data.n_users <= users
    assert 20 <= stats["mean_history_len"] <= 45 and 30 <= stats["mean_candidates"] <= 45   # MIND: ~33, ~37


def test_news_figures_are_measured_and_reported(tmp_path):
    data_dir, cache_dir = tmp_path / "mind-tiny" / "data", tmp_path / "mind-tiny" / "cache"
    scale.generate("mind-tiny", data_dir)
    results = {phase: scale.run_phase(phase, data_dir, cache_dir, max_steps=0, news=True)
               for phase in scale.NEWS_PHASES}
    assert results["load"]["interactions"] == results["prepare"]["interactions"] == sum(scale.MIND_SHAPES["mind-tiny"][2:])
    assert results["dev_evaluation"]["impressions"] == scale.MIND_SHAPES["mind-tiny"][3]
    assert 0 <= results["dev_evaluation"]["AUC"] <= 1
    text = scale.report(["mind-tiny", "again"], {"mind-tiny": results, "again": results})
    assert text.splitlines()[2].startswith("| impressions") and "| NRMS dev evaluation (s)" in text
