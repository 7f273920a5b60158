"""Simulated readers of a news table: the users, histories and impressions behind
``synthetic_mind`` / ``synthetic_mind_cold`` (generated titles, ``recboard.datasets.synthetic``)
and ``mind_titles_cold`` (real MIND titles, ``recboard.datasets.mind_titles``).

Every news has one category. Every user prefers one or two categories. A user's history
(5-30 news) is 90% news of the preferred categories; an impression shows 5-20 news, on
average a quarter of them of the preferred categories, each clicked with probability 0.8
when preferred and 0.02 otherwise, and at least one clicked (as in MIND). The best
possible AUC, knowing every user's categories, is about 0.93.

How a news is drawn ("preferred" or "any"):

* by news (``balanced=False``): uniformly among the news of the preferred categories, or
  among all news. Right when categories are of equal size (the generated topics).
* by category (``balanced=True``): a category first, uniformly among the preferred ones or
  among all, then one of its news uniformly. Real categories differ in size (the MIND
  sample: 603 "news" against 28 "movies"); drawn by news, a small category's news would be
  preferred, shown and clicked more often per news than a large one's, a signal a model
  could read from the title without looking at the user. Drawn by category, every
  category is equally often preferred, shown and clicked: only the user's taste separates
  clicks from the rest.

Cold start (``cold_start=True``): the news are split into three disjoint pools (60/20/20%,
within each category when balanced): training impressions and every history field draw
from the first, validation candidates from the second, test candidates from the third. No
validation or test candidate occurs in anything a model trains on, so an ID model and
popularity can only tie them (AUC 0.5) and only a model reading titles can rank them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recboard.datasets.batches import Impressions, NewsData, to_ragged

P_CLICK_PREFERRED, P_CLICK_OTHER = 0.8, 0.02
POOL_CUTS = (0.6, 0.8)             # cold start: train / valid / test news = 60 / 20 / 20%
START_TIME = 1_573_430_400         # 2019-11-11, MIND's week


@dataclass
class NewsTable:
    """The news readers are simulated over; index 0 is padding and 1 unknown, as in MIND."""
    news_ids: list           # index -> id
    titles: list             # index -> title
    categories: list         # index -> category name
    category_of: np.ndarray  # int64 index -> category number (-1 on padding and unknown)

    @property
    def n_categories(self) -> int:
        return int(self.category_of.max()) + 1


class ByNews:
    """Draws uniformly among news (``balanced=False``). ``preferred_pool[u]`` lists the news
    of user u's categories within ``pool``."""

    def __init__(self, pool: np.ndarray, preferred_pool: list, rng: np.random.Generator):
        self.pool, self.preferred_pool, self.rng = pool, preferred_pool, rng

    def preferred(self, user: int, size: int) -> np.ndarray:
        return self.rng.choice(self.preferred_pool[user], size=size)

    def any(self, size: int) -> np.ndarray:
        return self.rng.choice(self.pool, size=size)


class ByCategory:
    """Draws a category, then one of its news within ``pool`` (``balanced=True``)."""

    def __init__(self, pool: np.ndarray, category_of: np.ndarray, preferred: list, rng: np.random.Generator):
        self.members = [pool[category_of[pool] == c] for c in range(int(category_of.max()) + 1)]
        self.sizes = np.array([len(m) for m in self.members])
        self.preferred_categories, self.rng = preferred, rng

    def news_of(self, categories: np.ndarray) -> np.ndarray:
        picks = (self.rng.random(len(categories)) * self.sizes[categories]).astype(np.int64)
        return np.array([self.members[c][i] for c, i in zip(categories, picks)], dtype=np.int64)

    def preferred(self, user: int, size: int) -> np.ndarray:
        return self.news_of(self.rng.choice(self.preferred_categories[user], size=size))

    def any(self, size: int) -> np.ndarray:
        return self.news_of(self.rng.integers(0, len(self.members), size=size))


def news_pools(table: NewsTable, rng: np.random.Generator, cold_start: bool, balanced: bool) -> list:
    """(train + histories, valid, test) news: all news each, or three disjoint pools."""
    every = np.arange(2, len(table.news_ids))
    if not cold_start:
        return [every] * 3
    if not balanced:
        return np.split(rng.permutation(every), [int(c * len(every)) for c in POOL_CUTS])
    parts = []
    for c in range(table.n_categories):   # every category has news in every pool
        members = rng.permutation(every[table.category_of[every] == c])
        parts.append(np.split(members, [int(cut * len(members)) for cut in POOL_CUTS]))
    return [np.sort(np.concatenate([p[i] for p in parts])) for i in range(3)]


def simulate_readers(name: str, table: NewsTable, rng: np.random.Generator, *, n_users: int, n_train: int,
                     n_test: int, cold_start: bool, balanced: bool, extra_stats: dict) -> NewsData:
    """Users, histories and train / valid / test impressions over ``table`` (module docstring)."""
    from recboard.datasets.mind import VALID_FRACTION, in_time_order, time_split

    pools = news_pools(table, rng, cold_start, balanced)
    preferred = [rng.choice(table.n_categories, size=int(rng.integers(1, 3)), replace=False) for _ in range(n_users)]
    by_category = [np.flatnonzero(table.category_of == c) for c in range(table.n_categories)]
    preferred_news = [np.concatenate([by_category[c] for c in cats]) for cats in preferred]

    def draws(pool: np.ndarray):
        if balanced:
            return ByCategory(pool, table.category_of, preferred, rng)
        if cold_start:   # each user's preferred news within the pool
            return ByNews(pool, [np.sort(p[np.isin(p, pool)]) for p in preferred_news], rng)
        return ByNews(pool, preferred_news, rng)

    history_draws = draws(pools[0])
    histories = []
    for u in range(n_users):
        size = int(rng.integers(5, 31))
        n_preferred = int(rng.binomial(size, 0.9))
        histories.append(rng.permutation(np.concatenate([history_draws.preferred(u, n_preferred),
                                                         history_draws.any(size - n_preferred)])))

    def impressions(count: int, start_time: int, pool: np.ndarray) -> Impressions:
        users = rng.integers(0, n_users, size=count)
        times = start_time + np.cumsum(rng.integers(1, 120, size=count))
        shown = draws(pool)
        candidates, labels = [], []
        for u in users:
            size = int(rng.integers(5, 21))
            n_preferred = int(rng.binomial(size, 0.25))
            c = rng.permutation(np.concatenate([shown.preferred(u, n_preferred), shown.any(size - n_preferred)]))
            is_preferred = np.isin(table.category_of[c], preferred[u])
            clicked = (rng.random(size) < np.where(is_preferred, P_CLICK_PREFERRED, P_CLICK_OTHER)).astype(np.int8)
            if clicked.sum() == 0:                    # every impression has a click, as in MIND
                if not is_preferred.any():
                    c[0] = shown.preferred(u, 1)[0]
                    is_preferred[0] = True
                clicked[int(np.flatnonzero(is_preferred)[0])] = 1
            candidates.append(c)
            labels.append(clicked)
        h_off, h = to_ragged([histories[u] for u in users])
        c_off, c = to_ragged(candidates)
        _, lab = to_ragged(labels)
        return Impressions(users.astype(np.int32), times.astype(np.int64), h_off, h, c_off, c, lab.astype(np.int8))

    if cold_start:   # the time-last valid slice gets news of its own, so it is cut before drawing
        n_valid = int(round(VALID_FRACTION * n_train))
        train = in_time_order(impressions(n_train - n_valid, START_TIME, pools[0]))
        valid = in_time_order(impressions(n_valid, int(train.time.max()), pools[1]))
    else:
        train, valid = time_split(impressions(n_train, START_TIME, pools[0]))
    test = in_time_order(impressions(n_test, START_TIME + 7 * 86_400, pools[2]))
    stats = {"users": n_users, "news": len(table.news_ids) - 2, **split_stats((train, valid, test)),
             "missing_news_ids": 0, "missing_news_refs": 0, **extra_stats}
    if cold_start:
        stats["test_candidates_unseen_in_training"] = unseen_fraction(train, valid, test)
    return NewsData(name, table.news_ids, table.titles, table.categories, train, valid, test, n_users, stats=stats)


def split_stats(blocks: tuple) -> dict:
    train, valid, test = blocks
    n_imp = sum(len(b) for b in blocks)
    return {"train_impressions": len(train), "valid_impressions": len(valid), "test_impressions": len(test),
            "mean_history_len": round(sum(len(b.hist) for b in blocks) / n_imp, 3),
            "mean_candidates": round(sum(len(b.cand) for b in blocks) / n_imp, 3)}


def unseen_fraction(train: Impressions, valid: Impressions, test: Impressions) -> float:
    """Fraction of test candidates in nothing a model trains on (training impressions and
    every history field)."""
    trained_on = np.concatenate([train.hist, train.cand, test.hist, valid.hist])
    return float(np.isin(test.cand, trained_on, invert=True).mean())
