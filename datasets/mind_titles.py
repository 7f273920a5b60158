"""``mind_titles_cold``: cold-start news impressions over **real** MIND titles.

``synthetic_mind_cold`` is kind to title readers: each generated topic owns its words. Here
the news are real -- the titles and categories of a MIND release's ``news.tsv`` (the MIND
sample's 2,000 news; a larger release is cut to ``MAX_NEWS`` of them, drawn with the seed)
-- and only the readers are simulated, by ``recboard.datasets.simulated_news``: users who
prefer one or two categories, every validation and test candidate a news nobody read or
was shown in training (cold start), news drawn by category so that popularity, IDs and a
category's size can only tie and only the user's taste separates clicks. The words of a
preference are not exclusive to it: in the MIND sample 74% of title word occurrences are
of words that occur in titles of two categories or more (``stats["title_words_shared"]``).

Categories with fewer than ``MIN_CATEGORY_NEWS`` news (the sample's "kids" and
"entertainment") are left out: they could not fill three disjoint pools of news.
Subcategories are not used; a preference is a whole category ("news" covers US news,
politics, crime and world news alike).

Files: ``news.tsv`` of a MIND release, unzipped, in its train and dev folders
(``MINDsmall_train/`` + ``MINDsmall_dev/``, ``train/`` + ``dev/``, ... under ``--data-dir``
or ``RECBOARD_MIND_DIR``; their union is used), or a folder holding ``news.tsv`` itself.
"""
from __future__ import annotations

import re

import numpy as np

from recboard.datasets.simulated_news import NewsTable, simulate_readers

PREPROCESS_VERSION = 1
MAX_NEWS = 2000
MIN_CATEGORY_NEWS = 25
SEED = 0
# readers as many as synthetic_mind_cold's, so the two sets cost the same to train on
N_USERS, N_TRAIN, N_TEST = 400, 3000, 800
RELEASE_FOLDERS = [(f"MIND{size}_train", f"MIND{size}_dev") for size in ("small", "demo", "large")] + \
    [("train", "dev"), ("train", "valid")]


def source_files(name: str, data_dir) -> list:
    """The ``news.tsv`` files under ``data_dir``: a release's train and dev folders, or one file."""
    from recboard.datasets.download import source_root

    base = source_root(name, data_dir)
    for folders in RELEASE_FOLDERS:
        found = [base / folder / "news.tsv" for folder in folders]
        if all(f.is_file() for f in found):
            return found
    if (base / "news.tsv").is_file():
        return [base / "news.tsv"]
    # no --download: any MIND release's news.tsv will do, and mind_* datasets download them
    raise FileNotFoundError(f"{name}: news.tsv of a MIND release not found (looked in {base}: "
                            "MINDsmall_train/ and MINDsmall_dev/, train/ and dev/, or news.tsv itself). Pass "
                            "--data-dir <folder> or set RECBOARD_MIND_DIR=<folder>; the MIND sample's 2,000 news "
                            "suffice, and `bench prepare --dataset mind_demo --download` fetches a release into "
                            f"{source_root('mind_demo', None)}.")


def read_news_table(paths: list, seed: int = SEED) -> tuple[NewsTable, dict]:
    """The news of ``paths`` (their union) as a ``NewsTable``, rare categories left out and
    at most ``MAX_NEWS`` news kept; with the facts worth recording about the choice."""
    from recboard.datasets.mind import news_table

    ids, titles, categories, _ = news_table(paths)
    ids, titles, categories = ids[2:], titles[2:], categories[2:]   # without padding and unknown
    names, counts = np.unique(categories, return_counts=True)
    kept_names = [str(n) for n, c in zip(names, counts) if c >= MIN_CATEGORY_NEWS]
    keep = np.flatnonzero(np.isin(categories, kept_names) & np.array([bool(t.strip()) for t in titles]))
    dropped = len(ids) - len(keep)
    if len(keep) > MAX_NEWS:   # a full release: a seeded subset, in file order
        keep = np.sort(np.random.default_rng(seed).choice(keep, size=MAX_NEWS, replace=False))
    number = {n: i for i, n in enumerate(kept_names)}
    table = NewsTable(["<pad>", "<unknown>", *[ids[i] for i in keep]], ["", "", *[titles[i] for i in keep]],
                      ["", "", *[categories[i] for i in keep]],
                      np.array([-1, -1, *[number[categories[i]] for i in keep]], dtype=np.int64))
    return table, {"categories": len(kept_names), "news_left_out": dropped,
                   "title_words_shared": round(shared_word_fraction(table), 3)}


def shared_word_fraction(table: NewsTable) -> float:
    """Fraction of the title word occurrences whose word occurs in titles of >= 2 categories."""
    words = [re.findall(r"[a-z]+", title.lower()) for title in table.titles[2:]]
    seen_in: dict = {}
    for tokens, category in zip(words, table.category_of[2:]):
        for token in tokens:
            seen_in.setdefault(token, set()).add(int(category))
    occurrences = [len(seen_in[t]) > 1 for tokens in words for t in tokens]
    return float(np.mean(occurrences)) if occurrences else 0.0


def generate(table: NewsTable, facts: dict, name: str = "mind_titles_cold", seed: int = SEED, **sizes):
    """Simulated cold-start readers over ``table`` (``sizes``: n_users, n_train, n_test)."""
    sizes = {"n_users": N_USERS, "n_train": N_TRAIN, "n_test": N_TEST, **sizes}
    return simulate_readers(name, table, np.random.default_rng(seed), cold_start=True, balanced=True,
                            extra_stats={**facts, "seed": seed}, **sizes)


def build(name: str, data_dir, download: bool):
    if name != "mind_titles_cold":
        raise ValueError(f"mind_titles adapter serves 'mind_titles_cold', not {name!r}")
    table, facts = read_news_table(source_files(name, data_dir))
    return generate(table, facts, name)
