"""Dataset registry: string name -> adapter module, task and one-line description.

Each adapter module ``recboard.datasets.<file>`` exposes
``build(name, data_dir, download) -> SequenceData | NewsData`` (parsing the official files
with polars) and ``source_files(name, data_dir) -> list[Path]`` (what the cache
fingerprint covers). ``load_dataset`` goes through ``recboard.datasets.cache`` so
training only ever reads the prepared numpy cache, and prints the dataset's notices (e.g.
MIND news ids missing from news.tsv). Nothing here imports polars or torch, nor any module
of recboard outside ``recboard.datasets``.

Names not in ``DATASETS`` are resolved by ``recboard.datasets.plugins``: ``csv:PATH`` (your
own interactions file, ``recboard.datasets.interactions``) and adapters that installed
packages register under the ``recboard.datasets`` entry-point group.
"""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from recboard.datasets.plugins import DatasetSpec
from recboard.errors import UsageError


class UnknownDatasetError(UsageError):
    """A dataset name nobody registered: bad usage (``bench`` exits with code 2)."""


DATASETS: dict[str, DatasetSpec] = {
    "ml-1m": DatasetSpec("recboard.datasets.movielens", "sequence",
                         "MovieLens-1M ratings as time-ordered sequences (6,040 users, 3,416 items >= 5 ratings)",
                         "RECBOARD_ML1M_DIR"),
    "ml-20m": DatasetSpec("recboard.datasets.ml20m", "sequence",
                          "MovieLens-20M ratings as time-ordered sequences (138,493 users, 26,744 items)",
                          "RECBOARD_ML20M_DIR"),
    "beauty": DatasetSpec("recboard.datasets.beauty", "sequence",
                          "Amazon Beauty, BERT4Rec's release or the raw ratings CSV with 5-core filtering",
                          "RECBOARD_BEAUTY_DIR"),
    "steam": DatasetSpec("recboard.datasets.steam", "sequence",
                         "Steam game reviews, BERT4Rec's release or the UCSD reviews file (281,428 users, "
                         "13,044 items)", "RECBOARD_STEAM_DIR"),
    "mind_small": DatasetSpec("recboard.datasets.mind", "impression",
                              "MIND-small news impressions (50k users); train = train, test = dev",
                              "RECBOARD_MIND_DIR", "mind"),
    "mind_large": DatasetSpec("recboard.datasets.mind", "impression",
                              "MIND-large news impressions (1M users); test = dev", "RECBOARD_MIND_DIR", "mind"),
    "mind_demo": DatasetSpec("recboard.datasets.mind", "impression",
                             "MIND-demo (5k users), for quick end-to-end checks", "RECBOARD_MIND_DIR", "mind"),
    "synthetic_seq": DatasetSpec("recboard.datasets.synthetic", "sequence",
                                 "generated sequences with planted item transitions and user tastes (seeded)"),
    "synthetic_mind": DatasetSpec("recboard.datasets.synthetic", "impression",
                                  "generated news impressions with planted user-topic preference (seeded)"),
    "synthetic_mind_cold": DatasetSpec("recboard.datasets.synthetic", "impression",
                                       "synthetic_mind whose valid/test candidates are news never seen in training "
                                       "(cold start)", family="synthetic_mind"),
    "mind_titles_cold": DatasetSpec("recboard.datasets.mind_titles", "impression",
                                    "simulated readers of real MIND titles who prefer one or two categories; "
                                    "valid/test candidates never seen in training (cold start)",
                                    # the small simulated news sets share their size and so their presets
                                    "RECBOARD_MIND_DIR", family="synthetic_mind"),
}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        from recboard.datasets import plugins   # csv:PATH and installed plug-ins
        spec = plugins.dataset_spec(name)
        if spec is not None:
            return spec
        valid = sorted([*DATASETS, *plugins.entry_point_targets(plugins.DATASET_GROUP)])
        hint = difflib.get_close_matches(name, valid, n=1)
        raise UnknownDatasetError(f"unknown dataset {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + f"; valid datasets: {', '.join(valid)}, or csv:PATH for your own file")
    return DATASETS[name]


def load_dataset(name: str, data_dir=None, cache_dir=None, download: bool = False):
    """Prepared dataset from the cache, building (and caching) it on first use."""
    spec = dataset_spec(name)
    if data_dir is None and spec.env_var and os.environ.get(spec.env_var):
        data_dir = os.environ[spec.env_var]
    from recboard.datasets import cache
    from recboard.datasets.files import default_cache_dir
    from recboard.datasets.plugins import cache_key_and_adapter
    key, adapter = cache_key_and_adapter(name, spec)
    data = cache.load_or_build(key, adapter, None if data_dir is None else Path(data_dir),
                               Path(cache_dir) if cache_dir else default_cache_dir(), download)
    for notice in notices(name, data.stats):
        print(f"recboard: {notice}", file=sys.stderr)
    return data


def notices(name: str, stats: dict) -> list:
    """What a user should know about the prepared data before trusting results on it."""
    out = []
    if stats.get("missing_news_ids"):
        out.append(f"{name}: {stats['missing_news_ids']:,} news ids ({stats.get('missing_news_refs', 0):,} "
                   "references) are not in news.tsv; they share the unknown-news slot (empty title)")
    return out
