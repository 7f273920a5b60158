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
