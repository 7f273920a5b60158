"""MovieLens-20M as time-ordered item sequences, preprocessed as in BERT4Rec.

Sources (first found wins, in a data dir or its ``ml-20m/`` subfolder; else the official
``ml-20m.zip`` in the data dir, unpacked once into the cache's ``raw/ml-20m/``):

* GroupLens ``ratings.csv`` (header ``userId,movieId,rating,timestamp``): every rating is an
  implicit interaction; each user's ratings are sorted by timestamp, ties kept in file order.
* BERT4Rec's ``ml-20m.txt`` (``user item`` per line, each user's lines already in time order).

Then users with fewer than 5 ratings are dropped, BERT4Rec's rule; GroupLens selected users
with >= 20 ratings, so nobody is. Unlike ML-1m no item filter: the paper's 26,744 items are
every movie with a rating (138,493 users, 20,000,263 interactions). Items get dense indices
1..n in sorted order of their MovieLens ids; with ``movies.csv`` (``movieId,title,genres``,
quoted CSV) next to the ratings, ``item_text`` is ``"Title (year) | Genre1, Genre2"``.

The search, the filtering and the BERT4Rec reader are ML-1m's (``recboard.datasets.movielens``);
this module adds the CSV readers. ``ratings.csv`` is parsed in one vectorised pass, and line by
line only when that fails, to name the bad line.
"""
from __future__ import annotations

import csv
from pathlib import Path

from recboard.datasets import movielens
from recboard.datasets.cache import DataFormatError

PREPROCESS_VERSION = 1
URL = "https://files.grouplens.org/datasets/movielens/ml-20m.zip"
# GroupLens publishes the md5 (ml-20m.zip.md5); the size and sha256 of the same file are the
# ones independent projects pin (Julia's DataDeps.jl and several dataset loaders among them)
SIZE = 198_702_078
SHA256 = "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"
MD5 = "cd245b17a1ae2cc31bb14903e1204af3"
RATINGS_HEADER = "userId,movieId,rating,timestamp"
MOVIES_HEADER = ["movieId", "title", "genres"]


def read_ratings_csv(path: Path):
    """GroupLens ``ratings.csv`` -> (line_no, user, item, ts)."""
    import polars as pl

    from recboard.datasets import parsing as P
    what = RATINGS_HEADER
    P.read_header(path, RATINGS_HEADER, "GroupLens ratings.csv")
    df = P.read_numbers_fast(path, ",", {"user": pl.Int64, "item": pl.Int64, "rating": pl.Float64,
                                         "ts": pl.Int64}, skip_lines=1)
    if df is None:        # the line reader names the first line that is not four numbers
        lines = P.read_lines(path, what).filter(pl.col("line_no") > 1)
        if lines.is_empty():
            raise DataFormatError(f"{path}: file has no data lines after its header; expected lines of {what}")
        df = P.split_fields(lines, path, ",", ["user", "item", "rating", "ts"], what)
        df = P.to_int(df, path, {"user": "userId (field 1)", "item": "movieId (field 2)",
                                 "ts": "timestamp (field 4)"})
        df = P.to_float(df, path, {"rating": "rating (field 3)"})
    P.require_positive(df, path, {"user": "userId (field 1)", "item": "movieId (field 2)"})
    P.require_at_least(df, path, {"ts": "timestamp (field 4)"}, 0, "a {desc} >= {minimum} (seconds since 1970)")
    return df.select("line_no", "user", "item", "ts")


def read_movies_csv(path: Path) -> dict:
    """GroupLens ``movies.csv`` (quoted CSV, UTF-8) -> {movieId: "Title (year) | Genre1, Genre2"}."""
    import polars as pl

    from recboard.datasets import parsing as P
    what = "movieId,title,genres (titles with a comma are quoted)"
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)      # 27k lines: the csv module knows the quoting and counts lines
            if next(reader, None) != MOVIES_HEADER:
                raise P.format_error(path, 1, f"the header {','.join(MOVIES_HEADER)!r}", got=P.line_text(path, 1))
            for row in filter(None, reader):          # blank lines carry no movie
                if len(row) != 3 or not row[0].isdigit() or int(row[0]) < 1:
                    raise P.format_error(path, reader.line_num, f"{what}: 3 fields, a positive integer movieId "
                                                                "first", got=P.line_text(path, reader.line_num))
                rows.append((int(row[0]), row[1], row[2]))
    except UnicodeDecodeError:
        P.read_lines(path, what)        # raises the error naming the line and column
        raise
    df = pl.DataFrame(rows, schema={"item": pl.Int64, "title": pl.String, "genres": pl.String}, orient="row")
    return movielens.titles_by_id(df)


ML_20M = movielens.Release("ml-20m", URL, ("ratings.csv", "ml-20m.txt"), "movies.csv", 0,
                           read_ratings_csv, read_movies_csv)


def source_files(name: str, data_dir) -> list:
    return movielens.release_files(name, data_dir, ML_20M)


def _download(name: str) -> None:
    from recboard.datasets.download import fetch_and_unzip, raw_dir
    fetch_and_unzip(URL, raw_dir(name) / "ml-20m", sha256=SHA256, size=SIZE, md5=MD5,
                    manual_hint="Unzip it and pass --data-dir <the folder holding ratings.csv> "
                                "(or set RECBOARD_ML20M_DIR).")


def build(name: str, data_dir, download: bool):
    from recboard.datasets.download import find_or_download
    return movielens.build_release(name, find_or_download(name, data_dir, download, source_files, _download),
                                   ML_20M)
