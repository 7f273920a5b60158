"""``bench prepare``'s statistics table: a header row, the statistics papers report first
(users, items, interactions, density, mean and median length; MIND: news and impressions),
and the fingerprint cut to the 12 characters that name the cache folder."""
from __future__ import annotations

import re

import numpy as np
import pytest

from recboard.benchmarks import cli
from recboard.leaderboard.datastats import DataStats


def _prepare(name: str, monkeypatch, tmp_path, capsys) -> tuple:
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    assert cli.main(["prepare", "--dataset", name]) == 0
    out = capsys.readouterr().out
    from recboard.datasets.registry import load_dataset
    data = load_dataset(name)
    table = out.splitlines()[2:]                 # after "prepared at" and the identity line
    values = {line.rsplit("  ", 1)[0].strip(): line.rsplit("  ", 1)[1].strip() for line in table[2:]}
    return out, table, values, data


def test_prepare_sequences(monkeypatch, tmp_path, capsys):
    out, table, values, data = _prepare("synthetic_seq", monkeypatch, tmp_path, capsys)
    assert table[0].split() == ["statistic", "value"] and set(table[1]) == {"-", " "}
    lengths = data.lengths()
    users, items, interactions = data.n_users, data.n_items, len(data.items)
    assert list(values)[:6] == ["users", "items", "interactions", "density", "mean sequence length",
                                "median sequence length"]
    assert values["users"] == f"{users:,}" and values["interactions"] == f"{interactions:,}"
    assert values["density"] == f"{100 * interactions / (users * items):.3g}%"
    assert values["mean sequence length"] == f"{lengths.mean():.1f}"
    assert values["median sequence length"] == f"{np.median(lengths):.1f}"
    fingerprint = data.stats["fingerprint"]
    assert len(fingerprint) == 64 and values["fingerprint"] == fingerprint[:12]
    assert not re.search(r"[0-9a-f]{20,}", out)               # no long hash dominates the table
    assert fingerprint[:12] in out.splitlines()[0]            # the cache folder it names
    assert "mean_seq_len" not in values                        # shown once, under its paper name


def test_prepare_impressions(monkeypatch, tmp_path, capsys):
    out, table, values, data = _prepare("synthetic_mind", monkeypatch, tmp_path, capsys)
    assert table[0].split() == ["statistic", "value"]
    per_user = np.bincount(np.concatenate([b.user for b in (data.train, data.valid, data.test)]),
                           minlength=data.n_users)
    assert list(values)[:5] == ["users", "news", "impressions", "mean impressions per user",
                                "median impressions per user"]
    assert "density" not in values and "interactions" not in values
    assert values["impressions"] == f"{per_user.sum():,}"
    assert values["median impressions per user"] == f"{np.median(per_user):.1f}"
    assert f"{data.n_users:,} users, {values['news']} news, {values['impressions']} impressions" in out.splitlines()[1]


@pytest.mark.parametrize("stats, named", [
    # ML-1m's published size
    (DataStats(6040, 3416, 999611), {"density": "4.84%", "mean sequence length": "165.5"}),
    (DataStats(40226, 54542, 353962, median_length=6.0),
     {"density": "0.0161%", "mean sequence length": "8.8", "median sequence length": "6.0"}),
    (DataStats(None, None, None), {"users": "—", "density": "—", "mean sequence length": "—"}),
])
def test_paper_statistics(stats, named):
    assert {k: v for k, v in stats.named() if k in named} == named
