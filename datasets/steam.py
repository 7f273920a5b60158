"""Steam game reviews as time-ordered item sequences, as in BERT4Rec.

Sources (first found wins, in the data dir):

* ``steam.txt``, BERT4Rec's release (``user item`` per line, 1-based ids, each user's lines
  in time order), kept exactly as released like ``beauty.txt``: 281,428 users, 13,044 items,
  3.5M interactions, the numbers of the BERT4Rec tables.
* the UCSD reviews file SASRec introduced, ``steam_reviews.json.gz`` (or unpacked,
  ``steam_reviews.json``), what ``--download`` fetches. Despite the name each line is a Python
  dict literal, not JSON: ``{u'username': u'Chaos Syren', u'product_id': u'725280',
  u'date': u'2017-12-17', u'text': u'...', ...}``. Every review is an interaction of its
  ``username`` (SASRec's user key; fewer than half of the lines have a ``user_id``) with its
  ``product_id``; each user's reviews are sorted by date, ties in file order (dates have no
  time of day). Then SASRec's filter, in one pass with counts over the whole file (a review
  stays when its user and its game each have >= 5), and BERT4Rec's rule (users left with
  >= 5 reviews). That BERT4Rec's counts come out of this order of the two rules is our
  reading of the two papers (SASRec's Steam: 334,730 users, 13,047 items), not yet checked
  on the real file: the ``realdata`` test does when the file is present.

Reading 7.8M reviews with ``ast.literal_eval`` would take minutes, so three patterns pick
the fields of each line in a vectorised pass; a line they cannot vouch for (a field
missing, a key twice, a line that is no dict, JSON quoting) goes to ``ast.literal_eval``
(then ``json.loads``), and a line neither reads is an error naming the line. Items get dense
indices 1..n in sorted order of their product ids (``raw_item_ids``).
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

PREPROCESS_VERSION = 1
URL = "https://cseweb.ucsd.edu/~wckang/steam_reviews.json.gz"
BERT4REC_URL = "https://github.com/FeiSun/BERT4Rec/raw/master/data/steam.txt"
REVIEWS_NAMES = ("steam_reviews.json.gz", "steam_reviews.json")
# UCSD publishes no checksum for this file: the download is checked against the server's
# Content-Length and its sha256 is printed (docs/data.md, Downloads)
SIZE = None
SHA256 = None
CORE = 5
REVIEW = "a Python dict literal with 'username', 'product_id' and 'date' (a UCSD Steam review)"
BLOCK_BYTES = 64 << 20

# each key after "{" or ", ", u-prefixed as Python 2 wrote it (or not)
_KEY = r"[{{,]\s*u?'{}'\s*:\s*"
_STRING = r"u?('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"      # a Python string literal, quotes kept
PATTERNS = {"user": _KEY.format("username") + _STRING,
            "item": _KEY.format("product_id") + r"u?'(\d+)'",
            "date": _KEY.format("date") + r"u?'(\d{4}-\d{2}-\d{2})'"}
ANY_KEY = _KEY.format("(?:username|product_id|date)")


def _source_in(base: Path):
    for name in ("steam.txt", *REVIEWS_NAMES):
        if (base / name).is_file():
            return base / name
    return None


def source_files(name: str, data_dir) -> list:
    from recboard.datasets.download import missing_files_error, source_root
    base = source_root(name, data_dir)
    found = _source_in(base)
    if found is None:
        raise missing_files_error(name, [base], f"steam.txt (BERT4Rec, {BERT4REC_URL}) or the UCSD reviews "
                                                f"file {' / '.join(REVIEWS_NAMES)} ({URL})")
    return [found]


def _download(name: str) -> None:
    from recboard.datasets.download import fetch, raw_dir
    fetch(URL, raw_dir(name) / REVIEWS_NAMES[0], sha256=SHA256, size=SIZE,
          manual_hint=f"Put it (or BERT4Rec's {BERT4REC_URL}) in a folder and pass --data-dir "
                      f"<folder> (or set RECBOARD_STEAM_DIR).")


# --------------------------------------------------------------------------- the reviews file

def _line_blocks(path: Path):
    """(number of the first line, bytes of whole lines) of a plain or gzipped file, about
    ``BLOCK_BYTES`` at a time: the decompressed file can be larger than memory allows."""
    import gzip
    import zlib

    from recboard.datasets.cache import DataFormatError
    with open(path, "rb") as f:
        zipped = f.read(2) == b"\x1f\x8b"
    first_line, carry = 1, b""
    try:
        with (gzip.open if zipped else open)(path, "rb") as f:
            while chunk := f.read(BLOCK_BYTES):
                cut = chunk.rfind(b"\n") + 1
                if not cut:                  # a line longer than a block
                    carry += chunk
                    continue
                data = b"".join((carry, memoryview(chunk)[:cut]))     # one copy of the block
                carry = chunk[cut:]
                yield first_line, data
                first_line += data.count(b"\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataFormatError(f"{path}: the gzip stream is truncated or corrupt ({e}); expected the UCSD "
                              f"{REVIEWS_NAMES[0]} ({URL}); download it again") from None
    if carry:
        yield first_line, carry


def _text(value: str) -> str:
    """A decoded Python 2 literal as valid UTF-8: surrogate pairs joined, lone ones replaced."""
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _string_values(literals):
    """Python string literals (quotes kept) -> their values; only those with an escape are
    evaluated, once per distinct literal."""
    import polars as pl
    escaped = literals.str.contains("\\", literal=True)
    distinct = literals.filter(escaped).unique()
    values = pl.Series([_text(ast.literal_eval(s)) for s in distinct], dtype=pl.String)
    unquoted = literals.str.slice(1, literals.str.len_chars() - 2)
    return pl.select(pl.when(escaped).then(literals.replace(distinct, values)).otherwise(unquoted)).to_series()


def _literal_fields(line: str) -> tuple:
    """(username, product id, date) of a line the patterns could not read, as strings;
    None for what the line does not hold."""
    try:
        review = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            review = json.loads(line)
        except ValueError:
            return None, None, None
    if not isinstance(review, dict) or not isinstance(review.get("username"), str):
        return None, None, None
    item, date = review.get("product_id"), review.get("date")
    item = str(item) if isinstance(item, (str, int)) and re.fullmatch(r"[0-9]+", str(item)) else None
    return _text(review["username"]), item, date if isinstance(date, str) else None


def _block_reviews(path: Path, lines):
    """(line_no, user, item, date) of a block of non-blank lines, every line checked."""
    import polars as pl

    from recboard.datasets import parsing as P
    line = pl.col("line")
    fields = lines.with_columns(line.str.extract(pattern, 1).alias(key) for key, pattern in PATTERNS.items())
    # each field found once, in a line shaped like a dict; else the literal parser decides
    vouched = (pl.all_horizontal(pl.col(key).is_not_null() for key in PATTERNS)
               & (line.str.count_matches(ANY_KEY) == len(PATTERNS))
               & line.str.starts_with("{") & line.str.ends_with("}"))
    fields = fields.with_columns(vouched.alias("vouched"))
    found = fields.filter("vouched")
    found = found.with_columns(_string_values(found["user"]).alias("user"))
    odd = fields.filter(~pl.col("vouched"))
    parsed = pl.DataFrame([_literal_fields(text) for text in odd["line"]], orient="row",
                          schema={"user": pl.String, "item": pl.String, "date": pl.String})
    columns = ["line_no", "line", "user", "item", "date"]
    df = pl.concat([found.select(columns), pl.concat([odd.select("line_no", "line"), parsed], how="horizontal")])
    df = df.sort("line_no").with_columns(pl.col("item").str.to_integer(strict=False).alias("item_id"),
                                         pl.col("date").str.to_date("%Y-%m-%d", strict=False).alias("day"))
    bad = df.filter(pl.any_horizontal(pl.col(c).is_null() for c in ("user", "item_id", "day")))
    if len(bad):
        row = bad.row(0, named=True)
        expected = (REVIEW if row["user"] is None else
                    "a product_id of digits (the game's Steam app id)" if row["item_id"] is None else
                    "a date like '2017-12-17' (year-month-day)")
        raise P.format_error(path, row["line_no"], expected, got=row["line"])
    return df.select("line_no", "user", pl.col("item_id").alias("item"), pl.col("day").alias("date")), len(odd)


def read_reviews(path: Path):
    """The UCSD reviews file -> ((line_no, user, item, date), number of lines the literal
    parser read)."""
    import polars as pl

    from recboard.datasets import parsing as P
    from recboard.datasets.cache import DataFormatError
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: file is empty; expected lines of {REVIEW}")
    blocks, slow_lines, first_blank = [], 0, None
    for first_line, data in _line_blocks(path):
        try:
            lines = P.lines_frame(data).with_columns(pl.col("line_no") + (first_line - 1))
        except pl.exceptions.ComputeError:      # not UTF-8: find the line for the message
            raise _bad_utf8(path, first_line, data) from None
        blank = pl.col("line").str.strip_chars() == ""
        if first_blank is None and lines.select(blank.any()).item():
            first_blank = lines.filter(blank)["line_no"][0]
        if first_blank is not None and len(lines.filter(~blank & (pl.col("line_no") > first_blank))):
            raise P.format_error(path, first_blank, f"{REVIEW} (only trailing lines may be blank), "
                                                    "got an empty line")
        reviews, slow = _block_reviews(path, lines.filter(~blank))
        blocks.append(reviews)
        slow_lines += slow
    df = pl.concat(blocks)
    if df.is_empty():
        raise DataFormatError(f"{path}: file has no data lines; expected lines of {REVIEW}")
    return df, slow_lines


def _bad_utf8(path: Path, first_line: int, data: bytes):
    from recboard.datasets.cache import DataFormatError
    for line_no, raw in enumerate(data.split(b"\n"), start=first_line):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return DataFormatError(f"{path}, line {line_no}: expected UTF-8 text ({REVIEW}), "
                                   f"found invalid byte(s) at column {e.start + 1}")
    return DataFormatError(f"{path}: could not read lines {first_line}.. as text")


# --------------------------------------------------------------------------- build

def build(name: str, data_dir, download: bool):
    import polars as pl

    from recboard.datasets import parsing as P
    from recboard.datasets.batches import SequenceData
    from recboard.datasets.download import find_or_download
    from recboard.datasets.movielens import read_user_item_txt

    [path] = find_or_download(name, data_dir, download, source_files, _download)
    if path.suffix == ".txt":
        df = read_user_item_txt(path)
        raw_rows, order = len(df), ["line_no"]
        extra = {"filtering": "none (BERT4Rec release)"}
    else:
        df, slow_lines = read_reviews(path)
        raw_rows, order = len(df), ["date", "line_no"]
        df = df.filter((pl.len().over("user") >= CORE) & (pl.len().over("item") >= CORE))
        df = P.min_count_filter(df, "user", CORE)
        if df.is_empty():
            raise ValueError(f"{path}: nothing is left after keeping reviews of users and games with >= {CORE} "
                             f"reviews, then users with >= {CORE}")
        extra = {"filtering": f"users and games with >= {CORE} reviews (SASRec), then users with >= {CORE} (BERT4Rec)",
                 "dropped_interactions": raw_rows - len(df), "lines_read_by_literal_eval": slow_lines}
    seq = P.sequences(df.select("user", "item", *order), order)
    stats = {**seq["stats"], "source": path.name, **extra, "raw_interactions": raw_rows}
    return SequenceData(name, seq["n_items"], seq["offsets"], seq["items"],
                        raw_item_ids=seq["raw_item_ids"], stats=stats)
