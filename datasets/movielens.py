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

``recboard.datasets.ml20m`` reads MovieLens-20M with the same code: a ``Release`` says what
differs (file names, the item filter, the GroupLens readers), ``release_files`` finds the
files and ``build_release`` turns them into sequences.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


@dataclass(frozen=True)
class Release:
    """What differs between the MovieLens releases read here (ML-1m; ML-20m in
    ``recboard.datasets.ml20m``): file names, the filtering the papers applied, and the
    readers of the GroupLens ratings and titles files."""

    folder: str                  # the official zip's stem and top folder, e.g. "ml-1m"
    url: str                     # the official zip, for the error messages
    rating_files: tuple          # (GroupLens ratings, BERT4Rec's file): the first found is read
    titles_file: str
    min_item_ratings: int        # 0: no item filter
    read_ratings: Callable       # path -> (line_no, user, item, ts)
    read_titles: Callable        # path -> {movie id: "Title (year) | Genre1, Genre2"}

    @property
    def zip_name(self) -> str:
        return f"{self.folder}.zip"


def _search_dirs(name: str, data_dir, release: Release) -> list:
    from recboard.datasets.download import source_root
    base = source_root(name, data_dir)
    return [base, base / release.folder]


def find_release_dir(name: str, data_dir, release: Release) -> Path:
    """The folder holding the release's ratings: the data dir, its ``<folder>/`` subfolder,
    or the official zip in the data dir, unpacked once into the cache's ``raw/<name>/``."""
    dirs = _search_dirs(name, data_dir, release)
    for d in dirs:
        if any((d / f).is_file() for f in release.rating_files):
            return d
    archive = dirs[0] / release.zip_name
    grouplens, bert4rec = release.rating_files
    if archive.is_file():
        from recboard.datasets.download import unpack_local_zip
        return unpack_local_zip(name, archive, tuple((f,) for f in release.rating_files),
                                f"the GroupLens {release.zip_name} ({release.url}) holding {grouplens}")
    from recboard.datasets.download import missing_files_error
    raise missing_files_error(name, dirs, f"{grouplens} (GroupLens), {bert4rec} (BERT4Rec) or {release.zip_name}")


def release_files(name: str, data_dir, release: Release) -> list:
    """[ratings file, titles file if present]."""
    d = find_release_dir(name, data_dir, release)
    ratings = next(d / f for f in release.rating_files if (d / f).is_file())
    titles = d / release.titles_file
    return [ratings, titles] if titles.is_file() else [ratings]


def source_files(name: str, data_dir) -> list:
    return release_files(name, data_dir, ML_1M)


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
    import polars as pl

    from recboard.datasets import parsing as P
    df = P.read_numbers_fast(path, " ", {"user": pl.Int64, "item": pl.Int64})
    if df is None:       # not plain "1 2" lines: the line reader accepts more spacing or names the bad line
        df = P.split_fields(P.read_lines(path, what), path, " ", ["user", "item"], what, normalize_spaces=True)
        df = P.to_int(df, path, {"user": "user id (field 1)", "item": "item id (field 2)"})
    P.require_positive(df, path, {"user": "user id (field 1)", "item": "item id (field 2)"})
    return df.select("line_no", "user", "item")


def read_movies(path: Path) -> dict:
    """movies.dat (latin-1) -> {MovieID: "Title (year) | Genre1, Genre2"}."""
    from recboard.datasets import parsing as P
    what = "MovieID::Title::Genres"
    df = P.split_fields(P.read_lines(path, what, encoding="latin-1"), path, "::",
                        ["item", "title", "genres"], what)
    df = P.to_int(df, path, {"item": "MovieID (field 1)"})
    P.require_positive(df, path, {"item": "MovieID (field 1)"})
    return titles_by_id(df)


def titles_by_id(df) -> dict:
    """(item, title, genres) rows -> {item: "Title (year) | Genre1, Genre2"}; just the title
    where ML-20m says "(no genres listed)"."""
    import polars as pl
    genres = pl.col("genres").str.strip_chars()
    title = pl.col("title").str.strip_chars()
    text = pl.when(genres.is_in(["", "(no genres listed)"])).then(title) \
        .otherwise(title + " | " + genres.str.replace_all("|", ", ", literal=True))
    df = df.with_columns(text.alias("text"))
    return dict(zip(df["item"].to_list(), df["text"].to_list()))


def build_release(name: str, files: list, release: Release):
    """SequenceData of a release from its files (``release_files``): GroupLens ratings sorted
    by time (ties in file order) or BERT4Rec's file in its order, then the release's item
    filter and users with >= ``MIN_USER_RATINGS``."""
    from recboard.datasets import parsing as P
    from recboard.datasets.batches import SequenceData

    ratings_path = files[0]
    if ratings_path.name == release.rating_files[0]:
        df, order = release.read_ratings(ratings_path), ["ts", "line_no"]
    else:
        df, order = read_user_item_txt(ratings_path), ["line_no"]
    raw_rows, raw_items = len(df), df["item"].n_unique()

    kept = f"users with >= {MIN_USER_RATINGS}"
    if release.min_item_ratings:
        df = P.min_count_filter(df, "item", release.min_item_ratings)
        kept = f"items with >= {release.min_item_ratings} ratings and {kept}"
    df = P.min_count_filter(df, "user", MIN_USER_RATINGS)
    if df.is_empty():
        raise ValueError(f"{ratings_path}: no interactions left after keeping {kept}")
    seq = P.sequences(df.select("user", "item", *order), order)

    item_text = None
    if len(files) > 1:
        titles = release.read_titles(files[1])
        item_text = [""] + [titles.get(i, "") for i in seq["raw_item_ids"][1:]]
    stats = {**seq["stats"], "source": ratings_path.name, "raw_interactions": raw_rows,
             "raw_items": int(raw_items), "dropped_items": int(raw_items - seq["n_items"]),
             "dropped_interactions": raw_rows - seq["stats"]["interactions"]}
    if item_text is not None:
        stats["items_without_title"] = sum(1 for t in item_text[1:] if not t)
    return SequenceData(name, seq["n_items"], seq["offsets"], seq["items"], item_text=item_text,
                        raw_item_ids=seq["raw_item_ids"], stats=stats)


def build(name: str, data_dir, download: bool):
    from recboard.datasets.download import find_or_download
    return build_release(name, find_or_download(name, data_dir, download, source_files, _download), ML_1M)


ML_1M = Release("ml-1m", URL, RATING_FILES, "movies.dat", MIN_ITEM_RATINGS, read_ratings_dat, read_movies)
