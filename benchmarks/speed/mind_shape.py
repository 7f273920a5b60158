"""Generated MIND folders of a chosen shape, for the scale benchmark (``scale.py``).

``generate_mind(folder, shape)`` writes ``train/`` and ``dev/``, each with ``news.tsv`` and
``behaviors.tsv`` in the official format, which the ``mind_large`` adapter reads like the
unzipped official folders. The shapes are the released splits' sizes: MIND-large's train
holds 2,232,748 impressions and its dev 376,471, over 1,000,000 users and 161,013 news
(101,527 in train's news.tsv, 72,023 in dev's). MIND's headline 15.8M impressions also
count the unlabelled test split and the logs that only built the histories, which no
``bench`` command reads.

What the lines look like, chosen to cost what real lines cost: a title of 8-14 words from a
40,000-word vocabulary, a 20-word abstract; a history of ~33 clicked news per user (long
tailed, some empty), the same in every impression of that user, as in MIND; ~37 candidates
an impression (long tailed), distinct, with one or two clicks; news popularity Zipf-like. Written in
blocks of impressions, so generating MIND-large's 1.6 GB never holds it in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# users, news, train impressions, dev impressions; news in train's / dev's news.tsv as fractions
MIND_SHAPES = {"mind-small": (50_000, 51_282, 156_965, 73_152),
               "mind-large": (1_000_000, 161_013, 2_232_748, 376_471),
               "mind-tiny": (300, 400, 1_500, 400)}   # for the tests
TRAIN_NEWS, DEV_NEWS = 101_527 / 161_013, 72_023 / 161_013
VOCABULARY = 40_000
BLOCK = 200_000   # impressions written at a time
START_TIME, SPAN_S = 1_573_430_400, 6 * 86_400   # from 11 Nov 2019, MIND's first day, over six days


def zipf_sampler(n: int, exponent: float, rng):
    """Draws of 0..n-1 with probability ~ 1 / (rank + 1) ** exponent, ranks shuffled."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** exponent)
    cdf /= cdf[-1]
    order = rng.permutation(n)
    return lambda size: order[cdf.searchsorted(rng.random(size), side="right").clip(max=n - 1)]


def joined(ids: np.ndarray, offsets: np.ndarray, prefix: str, suffix=None) -> list:
    """Row r = prefix + ids[offsets[r]:offsets[r+1]] (+ "-" + suffix) joined by spaces."""
    import polars as pl

    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    token = pl.lit(prefix) + pl.col("id").cast(pl.String)
    if suffix is not None:
        token = token + pl.lit("-") + pl.col("s").cast(pl.String)
    frame = pl.DataFrame({"row": rows, "id": ids, **({"s": suffix} if suffix is not None else {})})
    text = frame.group_by("row", maintain_order=True).agg(token.str.join(" ").alias("t"))
    out = [""] * (len(offsets) - 1)
    for row, t in zip(text["row"].to_list(), text["t"].to_list()):
        out[row] = t
    return out


def news_frame(n_news: int, rng):
    """Every news' news.tsv line fields (ids 1..n_news): one title per id, whichever file holds it."""
    import polars as pl

    title_len = rng.integers(8, 15, size=n_news)
    words = zipf_sampler(VOCABULARY, 1.0, rng)
    offsets = np.concatenate([[0], np.cumsum(title_len)])
    category = rng.integers(0, 17, size=n_news)
    return pl.DataFrame({
        "id": [f"N{i}" for i in range(1, n_news + 1)], "category": [f"cat{c}" for c in category],
        "sub": [f"sub{c}" for c in category * 10 + rng.integers(0, 10, size=n_news)],
        "title": joined(words(int(offsets[-1])), offsets, "w"), "abstract": " ".join(f"a{i}" for i in range(20)),
        "url": "https://assets.example/x.html", "title_entities": "[]", "abstract_entities": "[]",
    })


def write_behaviors(path: Path, n_imps: int, n_users: int, history: tuple, news_pool: np.ndarray,
                    first_id: int, rng) -> None:
    """``n_imps`` lines: a uniform user, that user's history, candidates from ``news_pool``."""
    import polars as pl

    hist_offsets, hist_ids = history
    first, shuffled = zipf_sampler(len(news_pool), 0.8, rng), news_pool[rng.permutation(len(news_pool))]
    with open(path, "wb") as out:
        for begin in range(0, n_imps, BLOCK):
            count = min(BLOCK, n_imps - begin)
            user = rng.integers(0, n_users, size=count)
            lengths = hist_offsets[user + 1] - hist_offsets[user]
            starts = np.repeat(hist_offsets[user] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            hist = joined(hist_ids[starts + np.arange(offsets[-1])], offsets, "N")
            n_cand = np.minimum(2 + rng.geometric(1 / 36, size=count), min(299, len(news_pool)))
            cand_offsets = np.concatenate([[0], np.cumsum(n_cand)])
            # an impression shows distinct news: a run of the shuffled pool from a popular start
            within = np.arange(int(cand_offsets[-1])) - np.repeat(cand_offsets[:-1], n_cand)
            shown = shuffled[(np.repeat(first(count), n_cand) + within) % len(news_pool)]
            clicked = np.zeros(int(cand_offsets[-1]), dtype=np.int8)
            clicked[cand_offsets[:-1]] = 1   # every impression has a click ...
            second = rng.random(count) < 0.35   # ... and about a third a second one
            clicked[cand_offsets[:-1][second] + 1] = 1
            cands = joined(shown, cand_offsets, "N", clicked)
            times = pl.Series(START_TIME + (begin + np.arange(count)) * SPAN_S // n_imps)   # time order
            pl.DataFrame({
                "imp": np.arange(first_id + begin, first_id + begin + count), "user": [f"U{u}" for u in user],
                "time": pl.from_epoch(times, "s").dt.strftime("%m/%d/%Y %I:%M:%S %p"), "hist": hist, "imps": cands,
            }).write_csv(out, separator="\t", include_header=False, quote_style="never")


def generate_mind(folder: Path, shape: str, seed: int = 0) -> dict:
    """``folder/train`` and ``folder/dev`` of this shape; returns the written counts."""
    n_users, n_news, n_train, n_dev = MIND_SHAPES[shape]
    rng = np.random.default_rng(seed)
    train_news = np.arange(1, int(n_news * TRAIN_NEWS) + 1)
    dev_news = np.arange(n_news - int(n_news * DEV_NEWS) + 1, n_news + 1)
    lengths = np.minimum(rng.lognormal(mean=3.0, sigma=1.0, size=n_users).astype(np.int64),
                         min(400, len(train_news)))   # distinct clicks
    lengths[rng.random(n_users) < 0.03] = 0   # MIND has users without history
    hist_offsets = np.concatenate([[0], np.cumsum(lengths)])
    within = np.arange(int(hist_offsets[-1])) - np.repeat(hist_offsets[:-1], lengths)
    starts = np.repeat(zipf_sampler(len(train_news), 0.8, rng)(n_users), lengths)
    history = (hist_offsets, train_news[rng.permutation(len(train_news))][(starts + within) % len(train_news)])
    news = news_frame(n_news, rng)
    for split, pool, n_imps, first_id in (("train", train_news, n_train, 1), ("dev", dev_news, n_dev, 1)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        news[pool - 1].write_csv(folder / split / "news.tsv", separator="\t", include_header=False,
                                 quote_style="never")
        write_behaviors(folder / split / "behaviors.tsv", n_imps, n_users, history, pool, first_id, rng)
    return {"users": n_users, "news": n_news, "train_impressions": n_train, "dev_impressions": n_dev}


def write_glove(path: Path, dim: int = 300, seed: int = 0) -> None:
    """A GloVe text file (``word v1 .. v_dim``) for the titles' words: the NRMS paper's 300-d,
    so the evaluation costs what it would with glove.840B.300d, which is not fetched here."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(0, 0.3, size=(VOCABULARY, dim)).astype(np.float32)
    with open(path, "w") as out:
        for word, row in enumerate(vectors):
            out.write(f"w{word} " + " ".join(f"{v:.4f}" for v in row) + "\n")
