"""Amazon Beauty as time-ordered item sequences.

Sources (first found wins, in the data dir):

* ``beauty.txt``, BERT4Rec's release (``user item`` per line, 1-based ids, each user's lines
  in time order). Kept exactly as released, no filtering: 40,226 users, 54,542 items, the
  numbers the BERT4Rec / SASRec tables were measured on.
* the raw Amazon 2014 ratings CSV (``user,item,rating,timestamp``, no header, e.g.
  ``ratings_Beauty.csv`` from McAuley's SNAP page). Every rating is an interaction;
  iterative 5-core filtering (users and items with >= 5 interactions, repeated until stable),
  then each user's items sorted by timestamp, ties in file order. This is what
  ``--download`` fetches; it gives fewer users than BERT4Rec's file (different filtering).

Either file may also come zipped (``beauty.zip`` or ``ratings_Beauty.zip`` in the data dir):
it is unpacked once into the cache's ``raw/beauty/`` and read from there.

Items get dense indices 1..n in sorted order of their original ids (``raw_item_ids``).
"""
from __future__ import annotations

from pathlib import Path

PREPROCESS_VERSION = 1
URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/ratings_Beauty.csv"
BERT4REC_URL = "https://github.com/FeiSun/BERT4Rec/raw/master/data/beauty.txt"
CSV_NAME = "ratings_Beauty.csv"
# SNAP publishes no checksum for this file and we know of no trustworthy one: the download is
# checked against the server's Content-Length and its sha256 is printed (docs/data.md, Downloads)
SIZE = None
SHA256 = None
ZIP_NAMES = ("beauty.zip", "ratings_Beauty.zip")
CORE = 5


def _source_in(name: str, base: Path):
    """beauty.txt, ratings_Beauty.csv or the only CSV in ``base``; None if there is none."""
    if (base / "beauty.txt").is_file():
        return base / "beauty.txt"
    if (base / CSV_NAME).is_file():
        return base / CSV_NAME
    csvs = sorted(base.glob("*.csv")) if base.is_dir() else []
    if len(csvs) > 1:
        raise FileNotFoundError(f"{name}: several CSV files in {base} ({', '.join(p.name for p in csvs)}); "
                                f"name the Amazon ratings file {CSV_NAME} or keep only one")
    return csvs[0] if csvs else None


def _find_source(name: str, data_dir):
    from recboard.datasets.download import missing_files_error, source_root, unpack_local_zip
    base = source_root(name, data_dir)
    found = _source_in(name, base)
    if found is not None:
        return found
    archive = next((base / z for z in ZIP_NAMES if (base / z).is_file()), None)
    if archive is not None:
        folder = unpack_local_zip(name, archive, (("beauty.txt",), ("*.csv",)),
                                  f"a zip of BERT4Rec's beauty.txt or the Amazon ratings CSV {CSV_NAME}")
        found = _source_in(name, folder)
        if found is not None:
            return found
    raise missing_files_error(name, [base], f"beauty.txt (BERT4Rec, {BERT4REC_URL}), the Amazon "
                                            f"ratings CSV {CSV_NAME} ({URL}) or {' / '.join(ZIP_NAMES)}")


def source_files(name: str, data_dir) -> list:
    return [_find_source(name, data_dir)]


def _download(name: str) -> None:
    from recboard.datasets.download import fetch, raw_dir
    fetch(URL, raw_dir(name) / CSV_NAME, sha256=SHA256, size=SIZE,
          manual_hint=f"Put it (or BERT4Rec's {BERT4REC_URL}) in a folder and pass --data-dir "
                      f"<folder> (or set RECBOARD_BEAUTY_DIR).")


def read_ratings_csv(path: Path):
    """Amazon ``user,item,rating,timestamp`` -> (line_no, user, item, ts)."""
    from recboard.datasets import parsing as P
    what = "user,item,rating,timestamp"
    df = P.split_fields(P.read_lines(path, what), path, ",", ["user", "item", "rating", "ts"], what)
    df = P.to_float(df, path, {"rating": "rating (field 3)"})
    df = P.to_int(df, path, {"ts": "unix timestamp (field 4)"})
    P.require_at_least(df, path, {"ts": "unix timestamp (field 4)"}, 0,
                       "a {desc} >= {minimum} (seconds since 1970)")
    for col, field_no in (("user", 1), ("item", 2)):
        empty = df.filter(df[col].str.strip_chars() == "")
        if len(empty):
            raise P.format_error(path, empty["line_no"][0], f"a non-empty {col} id (field {field_no})",
                                 got=empty["line"][0])
    return df.select("line_no", "user", "item", "ts")


def build(name: str, data_dir, download: bool):
    from recboard.datasets import parsing as P
    from recboard.datasets.batches import SequenceData
    from recboard.datasets.download import find_or_download
    from recboard.datasets.movielens import read_user_item_txt

    [path] = find_or_download(name, data_dir, download, source_files, _download)
    if path.suffix == ".txt":
        df = read_user_item_txt(path)
        raw_rows = len(df)
        order = ["line_no"]
        extra = {"source": path.name, "filtering": "none (BERT4Rec release)"}
    else:
        df = read_ratings_csv(path)
        raw_rows = len(df)
        df = P.k_core(df, CORE)
        if df.is_empty():
            raise ValueError(f"{path}: nothing is left after {CORE}-core filtering")
        order = ["ts", "line_no"]
        extra = {"source": path.name, "filtering": f"iterative {CORE}-core",
                 "dropped_interactions": raw_rows - len(df)}
    seq = P.sequences(df.select("user", "item", *order), order)
    stats = {**seq["stats"], **extra, "raw_interactions": raw_rows}
    return SequenceData(name, seq["n_items"], seq["offsets"], seq["items"],
                        raw_item_ids=seq["raw_item_ids"], stats=stats)
