"""MovieLens-1M as time-ordered item sequences, preprocessed as in BERT4Rec / SASRec.

Sources (first found wins, in a data dir or its ``ml-1m/`` subfolder; else the official
``ml-1m.zip`` in the data dir, unpacked once into the cache's ``raw/ml-1m/``):

* GroupLens ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``): every rating is an
  implicit interaction; each user's ratings are sorted by timestamp, ties kept in file order.
* BERT4Rec's ``ml-1m.txt`` (``user item`` per line, each user's lines already in time order).

Then items with fewer than 5 ratings are dropped and afterwards users left with fewer than 5
(BERT4Rec keeps "users and items with at least five feedbacks"; on ML-1m the user rule
removes nobody: 6,040 users, 3,416 items). Items get dense indices 1..n in sorted order of
their MovieLens ids (``raw_item_ids`` keeps the ids). With ``movies.dat`` next to the ratings,
``item_text`` is ``"Title (year) | Genre1, Genre2"`` for text models.
"""
from __future__ import annotations

from pathlib import Path

PREPROCESS_VERSION = 1
URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
# GroupLens publishes the md5; the size and sha256 of the same file are the ones many
# independent projects pin (TensorFlow's and Keras-RS's MovieLens examples among them)
SIZE = 5_917_549
SHA256 = "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
MD5 = "c4d9eecfca2ab87c1945afe126590906"
MIN_ITEM_RATINGS = 5
MIN_USER_RATINGS = 5
RATING_FILES = ("ratings.dat", "ml-1m.txt")
ZIP_NAME = "ml-1m.zip"


def _search_dirs(name: str, data_dir) -> list:
    from recboard.datasets.download import source_root
    base = source_root(name, data_dir)
    return [base, base / "ml-1m"]


def find_dir(name: str, data_dir) -> Path:
    dirs = _search_dirs(name, data_dir)
    for d in dirs:
        if any((d / f).is_file() for f in RATING_FILES):
            return d
    archive = dirs[0] / ZIP_NAME
    if archive.is_file():
        from recboard.datasets.download import unpack_local_zip
        return unpack_local_zip(name, archive, tuple((f,) for f in RATING_FILES),
                                f"the GroupLens {ZIP_NAME} ({URL}) holding ratings.dat")
    from recboard.datasets.download import missing_files_error
    raise missing_files_error(name, dirs, f"ratings.dat (GroupLens), ml-1m.txt (BERT4Rec) or {ZIP_NAME}")


def source_files(name: str, data_dir) -> list:
    d = find_dir(name, data_dir)
    ratings = next(d / f for f in RATING_FILES if (d / f).is_file())
    movies = d / "movies.dat"
    return [ratings, movies] if movies.is_file() else [ratings]


def _download(name: str) -> None:
    from recboard.datasets.download import fetch_and_unzip, raw_dir
    fetch_and_unzip(URL, raw_dir(name) / "ml-1m", sha256=SHA256, size=SIZE, md5=MD5,
                    manual_hint="Unzip it and pass --data-dir <the folder holding ratings.dat> "
                                "(or set RECBOARD_ML1M_DIR).")


def read_ratings_dat(path: Path):
    """GroupLens ratings -> (line_no, user, item, ts)."""
    from recboard.datasets import parsing as P
    what = "UserID::MovieID::Rating::Timestamp"
    df = P.split_fields(P.read_lines(path, what), path, "::", ["user", "item", "rating", "ts"], what)
    df = P.to_int(df, path, {"user": "UserID (field 1)", "item": "MovieID (field 2)",
                             "rating": "Rating (field 3)", "ts": "Timestamp (field 4)"})
    P.require_positive(df, path, {"user": "UserID (field 1)", "item": "MovieID (field 2)"})
    P.require_at_least(df, path, {"ts": "Timestamp (field 4)"}, 0,
                       "a {desc} >= {minimum} (seconds since 1970)")
    return df.select("line_no", "user", "item", "ts")


def read_user_item_txt(path: Path, what: str = "'user item' (two integer ids)"):
    """BERT4Rec-style ``user item`` lines -> (line_no, user, item), file order = time order."""
    from recboard.datasets import parsing as P
    df = P.split_fields(P.read_lines(path, what), path, " ", ["user", "item"], what, normalize_spaces=True)
    df = P.to_int(df, path, {"user": "user id (field 1)", "item": "item id (field 2)"})
    P.require_positive(df, path, {"user": "user id (field 1)", "item": "item id (field 2)"})
    return df.select("line_no", "user", "item")


def read_movies(path: Path) -> dict:
    """movies.dat (latin-1) -> {MovieID: "Title (year) | Genre1, Genre2"}."""
    import polars as pl

    from recboard.datasets import parsing as P
    what = "MovieID::Title::Genres"
    df = P.split_fields(P.read_lines(path, what, encoding="latin-1"), path, "::",
                        ["item", "title", "genres"], what)
    df = P.to_int(df, path, {"item": "MovieID (field 1)"})
    P.require_positive(df, path, {"item": "MovieID (field 1)"})
    df = df.with_columns((pl.col("title").str.strip_chars() + " | "
                          + pl.col("genres").str.strip_chars().str.replace_all("|", ", ", literal=True))
                         .alias("text"))
    return dict(zip(df["item"].to_list(), df["text"].to_list()))


def build(name: str, data_dir, download: bool):
    from recboard.datasets import parsing as P
    from recboard.datasets.batches import SequenceData
    from recboard.datasets.download import find_or_download

    files = find_or_download(name, data_dir, download, source_files, _download)
    ratings_path = files[0]
    if ratings_path.name == "ratings.dat":
        df, order = read_ratings_dat(ratings_path), ["ts", "line_no"]
    else:
        df, order = read_user_item_txt(ratings_path), ["line_no"]
    raw_rows, raw_items = len(df), df["item"].n_unique()

    df = P.min_count_filter(df, "item", MIN_ITEM_RATINGS)
    df = P.min_count_filter(df, "user", MIN_USER_RATINGS)
    if df.is_empty():
        raise ValueError(f"{ratings_path}: no interactions left after keeping items with >= "
                         f"{MIN_ITEM_RATINGS} ratings and users with >= {MIN_USER_RATINGS}")
    seq = P.sequences(df.select("user", "item", *order), order)

    item_text = None
    if len(files) > 1:
        titles = read_movies(files[1])
        item_text = [""] + [titles.get(i, "") for i in seq["raw_item_ids"][1:]]
    stats = {**seq["stats"], "source": ratings_path.name, "raw_interactions": raw_rows,
             "raw_items": int(raw_items), "dropped_items": int(raw_items - seq["n_items"]),
             "dropped_interactions": raw_rows - seq["stats"]["interactions"]}
    if item_text is not None:
        stats["items_without_title"] = sum(1 for t in item_text[1:] if not t)
    return SequenceData(name, seq["n_items"], seq["offsets"], seq["items"], item_text=item_text,
                        raw_item_ids=seq["raw_item_ids"], stats=stats)
