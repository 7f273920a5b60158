"""MIND (Microsoft News Dataset): news table + impressions, for ``mind_small``, ``mind_large``
and ``mind_demo``.

A data dir holds the unzipped official folders ``MINDsmall_train/`` + ``MINDsmall_dev/``
(``MINDlarge_*``, ``MINDdemo_*``), or ``train/`` + ``dev/`` (or ``valid/``), each with
``behaviors.tsv`` and ``news.tsv``, or the official zips ``MINDsmall_train.zip`` +
``MINDsmall_dev.zip`` as downloaded (unpacked once into the cache's ``raw/<name>/``).
``--download`` fetches the official zips from the mirror microsoft/recommenders uses (the
old ``mind201910small.blob.core.windows.net`` is gone).

Choices, all visible in ``stats``:

* news table = union of train and dev ``news.tsv``; index 0 = padding, 1 = unknown news,
  real news from 2 in order of first appearance. News referenced by behaviors but absent
  from news.tsv map to 1 and are counted (``missing_news_ids``, ``missing_news_refs``).
* news.tsv may contain tabs inside a title or abstract (the row then has more than 8
  fields): the first 3 and last 3 fields are fixed, the last middle field is the abstract
  and the ones before it, joined with a space, the title. Quotes are ordinary characters.
* one dense user index across splits (sorted user ids).
* splits: ``test`` = official dev; ``valid`` = the time-last 10% of official train
  impressions; ``train`` = the rest. Each split is in time order (stable).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recboard.datasets.batches import UNKNOWN_NEWS, Impressions

PREPROCESS_VERSION = 1
BASE_URL = "https://recodatasets.z20.web.core.windows.net/newsrec/"
PREFIX = {"mind_small": "MINDsmall", "mind_large": "MINDlarge", "mind_demo": "MINDdemo"}
# {zip name: (size, sha256)} of the official zips. Microsoft publishes no checksums and we
# know of no trustworthy ones, so none is listed: downloads are checked against the server's
# Content-Length and their sha256 is printed (docs/data.md, Downloads). Add a pair here once known.
CHECKSUMS: dict = {}
VALID_FRACTION = 0.1
BLOCK_LINES = 250_000   # behaviors.tsv lines parsed at a time (read_impressions)
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
NEWS_FORMAT = ("NewsID<tab>Category<tab>SubCategory<tab>Title<tab>Abstract<tab>URL<tab>"
               "TitleEntities<tab>AbstractEntities")
BEHAVIORS_FORMAT = "ImpressionID<tab>UserID<tab>Time<tab>History<tab>Impressions"


# --------------------------------------------------------------------------- ragged helpers (numpy)

def take_ragged(offsets: np.ndarray, values: np.ndarray, index: np.ndarray):
    """Rows ``index`` of a ragged array, vectorised (no Python loop over rows)."""
    starts = offsets[index]
    lengths = offsets[index + 1] - starts
    new_offsets = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    positions = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return new_offsets, values[positions]


def take_impressions(block: Impressions, index) -> Impressions:
    index = np.asarray(index, dtype=np.int64)
    h_off, h = take_ragged(block.hist_offsets, block.hist, index)
    c_off, c = take_ragged(block.cand_offsets, block.cand, index)
    _, lab = take_ragged(block.cand_offsets, block.label, index)
    return Impressions(block.user[index], block.time[index], h_off, h, c_off, c, lab)


def time_split(block: Impressions, valid_fraction: float = VALID_FRACTION):
    """(train, valid): valid = the time-last ``valid_fraction`` of impressions, both in time order."""
    order = np.argsort(block.time, kind="stable")
    n_valid = int(round(valid_fraction * len(order))) if len(order) > 1 else 0
    n_valid = max(n_valid, 1) if len(order) > 1 else 0
    return take_impressions(block, order[:len(order) - n_valid]), take_impressions(block, order[len(order) - n_valid:])


def in_time_order(block: Impressions) -> Impressions:
    return take_impressions(block, np.argsort(block.time, kind="stable"))


# --------------------------------------------------------------------------- files

def _split_dir(d: Path):
    """``d`` if it holds the TSVs, else its single subfolder that does (zips packed one level deeper)."""
    if (d / "behaviors.tsv").is_file() and (d / "news.tsv").is_file():
        return d
    subs = [s for s in d.iterdir() if s.is_dir() and (s / "behaviors.tsv").is_file()] if d.is_dir() else []
    return subs[0] if len(subs) == 1 and (subs[0] / "news.tsv").is_file() else None


def find_split_dirs(name: str, data_dir) -> tuple:
    from recboard.datasets.download import check_local_zip, missing_files_error, source_root, unpack_local_zip
    if name not in PREFIX:
        raise ValueError(f"mind adapter serves {sorted(PREFIX)}, not {name!r}")
    base = source_root(name, data_dir)
    prefix = PREFIX[name]
    for train, dev in ((f"{prefix}_train", f"{prefix}_dev"), ("train", "dev"), ("train", "valid")):
        pair = _split_dir(base / train), _split_dir(base / dev)
        if all(pair):
            return pair
    # the official zips as downloaded (either split may already be unzipped beside the other)
    found = [_split_dir(base / f"{prefix}_{split}") or base / f"{prefix}_{split}.zip"
             for split in ("train", "dev")]
    if all(f.is_dir() or f.is_file() for f in found):
        wanted = (("behaviors.tsv", "news.tsv"),)

        def official(z: Path) -> str:
            return f"the official {z.name} (https://msnews.github.io) with behaviors.tsv and news.tsv"
        for f in found:                      # check both zips before unpacking either
            if f.is_file():
                check_local_zip(f, wanted, official(f))
        return tuple(unpack_local_zip(name, f, wanted, official(f)) if f.is_file() else f for f in found)
    raise missing_files_error(name, [base], f"{prefix}_train/ and {prefix}_dev/ (or train/ and dev/), "
                                            f"each with behaviors.tsv and news.tsv, or {prefix}_train.zip "
                                            f"and {prefix}_dev.zip,")


def source_files(name: str, data_dir) -> list:
    train, dev = find_split_dirs(name, data_dir)
    return [train / "behaviors.tsv", train / "news.tsv", dev / "behaviors.tsv", dev / "news.tsv"]


def _download(name: str) -> None:
    from recboard.datasets.download import fetch_and_unzip, raw_dir
    for split in ("train", "dev"):
        zip_name = f"{PREFIX[name]}_{split}.zip"
        size, sha256 = CHECKSUMS.get(zip_name, (None, None))
        fetch_and_unzip(BASE_URL + zip_name, raw_dir(name) / f"{PREFIX[name]}_{split}", size=size, sha256=sha256,
                        manual_hint=f"Get {PREFIX[name]}_train.zip and {PREFIX[name]}_dev.zip (see "
                                    "https://msnews.github.io), unzip both into one folder and pass "
                                    "--data-dir <folder> (or set RECBOARD_MIND_DIR).")


# --------------------------------------------------------------------------- parsing (polars)

def read_news(path: Path):
    """news.tsv -> (line_no, news_id, category, title, extra_tabs)."""
    import polars as pl

    from recboard.datasets import parsing as P
    df = P.read_lines(path, NEWS_FORMAT)
    parts = df.with_columns(pl.col("line").str.split("\t").alias("p")).with_columns(n=pl.col("p").list.len())
    bad = parts.filter(pl.col("n") < 8)
    if len(bad):
        raise P.format_error(path, bad["line_no"][0], f"at least 8 tab-separated fields ({NEWS_FORMAT}) "
                                                      f"but found {bad['n'][0]}", got=bad["line"][0])
    news = parts.select(
        "line_no",
        pl.col("p").list.get(0).str.strip_chars().alias("news_id"),
        pl.col("p").list.get(1).alias("category"),
        pl.col("p").list.slice(3, pl.col("n") - 7).list.join(" ").alias("title"),
        (pl.col("n") > 8).alias("extra_tabs"),
        pl.col("line"))
    empty = news.filter(pl.col("news_id") == "")
    if len(empty):
        raise P.format_error(path, empty["line_no"][0], "a NewsID in field 1", got=empty["line"][0])
    return news.drop("line")


def news_table(paths: list) -> tuple:
    """Union of news.tsv files -> (news_ids, titles, categories, rows with extra tabs)."""
    import polars as pl

    from recboard.datasets.cache import DataFormatError
    frames = [read_news(p).with_columns(pl.lit(i).alias("file")) for i, p in enumerate(paths)]
    news = pl.concat(frames)
    conflicts = (news.group_by("news_id", maintain_order=True)
                 .agg(pl.col("title").n_unique().alias("variants"), "file", "line_no", "title")
                 .filter(pl.col("variants") > 1))
    if len(conflicts):
        row = conflicts.row(0, named=True)
        where = [(f"{paths[f]}, line {ln}", t) for f, ln, t in zip(row["file"], row["line_no"], row["title"])]
        (a, ta), (b, tb) = where[0], next(w for w in where if w[1] != where[0][1])
        raise DataFormatError(f"news id {row['news_id']} appears with different titles: {a}: {ta!r} vs "
                              f"{b}: {tb!r}; expected one title per news id across train and dev")
    first = news.unique("news_id", keep="first", maintain_order=True)
    return (["<pad>", "<unknown>", *first["news_id"].to_list()], ["", "", *first["title"].to_list()],
            ["", "", *first["category"].to_list()], int(first["extra_tabs"].sum()))


def parse_behaviors(lines, path: Path):
    """behaviors.tsv lines (``P.read_lines``' frame, or a slice of it) -> one row per impression
    with validated, still-string fields."""
    import polars as pl

    from recboard.datasets import parsing as P
    df = P.split_fields(lines, path, "\t", ["imp_id", "user", "time_str", "hist", "imps"], BEHAVIORS_FORMAT)
    df = P.to_int(df, path, {"imp_id": "ImpressionID (field 1)"})
    df = df.with_columns(pl.col("user").str.strip_chars(),
                         pl.col("time_str").str.strip_chars().str.strptime(pl.Datetime("ms"), TIME_FORMAT, strict=False)
                         .dt.epoch("s").alias("time"))
    for bad, expected, col in (
            (pl.col("user") == "", "a UserID in field 2", "line"),
            (pl.col("time").is_null(), "a time like '11/11/2019 9:05:58 AM' in field 3", "time_str")):
        rows = df.filter(bad)
        if len(rows):
            raise P.format_error(path, rows["line_no"][0], expected, got=rows[col][0])
    return df.select("line_no", "user", "time", _tokens("hist"), _tokens("imps"))


def read_impressions(path: Path, news_ids: list, missing: dict):
    """behaviors.tsv -> (its UserIDs, one per impression; its ``Impressions``, whose ``user``
    the caller fills once every file's users are known).

    Parsed ``BLOCK_LINES`` lines at a time: the token lists of a whole file (MIND-large's
    train: ~180M history and candidate tokens) took 8.1 GB at once; a block's take a tenth."""
    import polars as pl

    from recboard.datasets import parsing as P
    lines = P.read_lines(path, BEHAVIORS_FORMAT)
    users, blocks = [], []
    for start in range(0, len(lines), BLOCK_LINES):
        df = parse_behaviors(lines.slice(start, BLOCK_LINES), path)
        users.append(df["user"])
        blocks.append(_impressions(df, path, news_ids, missing))
    return pl.concat(users), concat_impressions(blocks)


def concat_impressions(blocks: list) -> Impressions:
    """One ``Impressions`` of ``blocks`` in order (offsets shifted)."""
    def offsets(name: str) -> np.ndarray:
        parts = [getattr(b, name) for b in blocks]
        bases = np.cumsum([0] + [p[-1] for p in parts[:-1]])
        return np.concatenate([np.zeros(1, np.int64), *[p[1:] + base for p, base in zip(parts, bases)]])

    def values(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in blocks])
    return Impressions(values("user"), values("time"), offsets("hist_offsets"), values("hist"),
                       offsets("cand_offsets"), values("cand"), values("label"))


def _tokens(column: str):
    """Space-separated field -> list of non-empty tokens (an empty history gives [])."""
    import polars as pl
    return pl.col(column).str.split(" ").list.eval(pl.element().filter(pl.element() != "")).alias(column)


def _candidates(df, path: Path):
    """Explode impressions 'N1-0 N2-1' -> (line_no, news, label) with error checks."""
    import polars as pl

    from recboard.datasets import parsing as P
    no_cands = df.filter(pl.col("imps").list.len() == 0)
    if len(no_cands):
        raise P.format_error(path, no_cands["line_no"][0], "at least one candidate 'NewsID-label' in field 5",
                             got="an empty impression list")
    token = pl.col("imps")
    cand = df.select("line_no", "imps").explode("imps")
    # string suffix tests instead of a regex: ~10x faster on MIND-large's 90M candidates
    ok = (token.str.ends_with("-0") | token.str.ends_with("-1")) & (token.str.len_bytes() > 2)
    bad = cand.filter(~ok)
    if len(bad):
        raise P.format_error(path, bad["line_no"][0], "candidates like 'N1234-1' (clicked) or 'N1234-0' "
                                                      "in field 5, label 0 or 1", got=bad["imps"][0])
    cand = cand.select("line_no", token.str.head(-2).alias("news"),
                       token.str.ends_with("-1").cast(pl.Int8).alias("label"))
    clicks = cand.group_by("line_no", maintain_order=True).agg(pl.col("label").sum().alias("clicks"))
    none = clicks.filter(pl.col("clicks") == 0)
    if len(none):
        raise P.format_error(path, none["line_no"][0], "at least one clicked candidate (label 1) in field 5",
                             got=" ".join(df.filter(pl.col("line_no") == none["line_no"][0])["imps"][0]))
    return cand.select("line_no", "news", "label")


def _impressions(df, path: Path, news_ids: list, missing: dict) -> Impressions:
    """One block of parsed behaviors -> ``Impressions`` (``user`` left 0: see ``read_impressions``)."""
    import polars as pl
    news_idx = pl.int_range(0, len(news_ids), eager=True).cast(pl.Int32)
    hist = df["hist"].explode().drop_nulls()
    cand = _candidates(df, path)
    mapped = []
    for series in (hist, cand["news"]):
        idx = series.replace_strict(news_ids[2:], news_idx[2:], default=UNKNOWN_NEWS, return_dtype=pl.Int32)
        unknown = idx == UNKNOWN_NEWS
        missing["refs"] += int(unknown.sum())
        missing["ids"].update(series.filter(unknown).unique().to_list())
        mapped.append(idx.to_numpy())
    hist_off = np.zeros(len(df) + 1, dtype=np.int64)
    np.cumsum(df["hist"].list.len().to_numpy(), out=hist_off[1:])
    cand_off = np.zeros(len(df) + 1, dtype=np.int64)
    np.cumsum(df["imps"].list.len().to_numpy(), out=cand_off[1:])
    return Impressions(np.zeros(len(df), np.int32), df["time"].to_numpy().astype(np.int64), hist_off, mapped[0].astype(np.int32),
                       cand_off, mapped[1].astype(np.int32), cand["label"].to_numpy().astype(np.int8))


def build(name: str, data_dir, download: bool):
    import polars as pl

    from recboard.datasets.batches import NewsData
    from recboard.datasets.download import find_or_download
    train_beh, train_news, dev_beh, dev_news = find_or_download(name, data_dir, download, source_files, _download)
    same_news = train_news.stat().st_size == dev_news.stat().st_size and \
        train_news.read_bytes() == dev_news.read_bytes()
    news_ids, titles, categories, extra_tabs = news_table([train_news] if same_news else [train_news, dev_news])

    missing = {"refs": 0, "ids": set()}
    (train_users, official_train), (dev_users, dev) = (read_impressions(path, news_ids, missing)
                                                       for path in (train_beh, dev_beh))
    user_ids = pl.concat([train_users, dev_users]).unique().sort()
    for users, block in ((train_users, official_train), (dev_users, dev)):
        block.user = users.replace_strict(user_ids, pl.int_range(0, len(user_ids), eager=True),
                                          return_dtype=pl.Int32).to_numpy()
    test = in_time_order(dev)
    train, valid = time_split(official_train)

    blocks = (train, valid, test)
    n_imp = sum(len(b) for b in blocks)
    stats = {"users": len(user_ids), "news": len(news_ids) - 2,
             "train_impressions": len(train), "valid_impressions": len(valid), "test_impressions": len(test),
             "mean_history_len": round(sum(len(b.hist) for b in blocks) / max(n_imp, 1), 3),
             "mean_candidates": round(sum(len(b.cand) for b in blocks) / max(n_imp, 1), 3),
             "empty_histories": int(sum((np.diff(b.hist_offsets) == 0).sum() for b in blocks)),
             "missing_news_ids": len(missing["ids"]), "missing_news_refs": missing["refs"],
             "news_rows_with_extra_tabs": extra_tabs}
    return NewsData(name, news_ids, titles, categories, train, valid, test, len(user_ids), stats=stats)
