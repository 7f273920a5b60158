"""Your own interactions file as a sequence dataset: ``--dataset csv:PATH[?OPTIONS]``.

PATH is a CSV or TSV file (no ``?`` in it) with one interaction per row: a user id, an item
id and a time. OPTIONS, ``key=value`` joined by ``&`` (quote the whole name in a shell):

* ``user``, ``item``, ``time``: the column names (defaults ``user``, ``item``,
  ``timestamp``); with ``header=0`` they are 1-based column numbers (defaults 1, 2, 3);
* ``sep``: the separator, one character, or ``tab`` (default: tab for ``.tsv`` / ``.tab``
  files, else ``,``);
* ``header``: ``1`` (default) if the first line names the columns, ``0`` if it is data;
* ``kcore``: iterative k-core filtering (users and items with >= k interactions, repeated
  until stable; the same code as Amazon Beauty's 5-core); default 0, no filtering.

e.g. ``csv:data/plays.tsv?user=uid&item=track&time=ts&kcore=5`` or
``csv:ratings_Beauty.csv?header=0&time=4&kcore=5``.

Ids are kept as text, or as integers when every id of a column is one (so they sort as
numbers); items get dense indices 1..n in sorted order of their ids, as in the built-in
adapters. Time is an integer or decimal number (unix time) or a date/time (ISO 8601);
each user's rows are sorted by it, ties in file order, then split leave-one-out like every
sequence dataset. The file is parsed with polars (``scan_csv``) and prepared once into the
same fingerprinted cache as the built-ins, filed under ``csv-<file stem>-<hash of the path
and options>``; a bad row is an error naming the file, the line and what was expected.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

OPTIONS = ("user", "item", "time", "sep", "header", "kcore")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


@dataclass(frozen=True)
class CsvSource:
    """One ``csv:`` dataset: the file and how to read it. It is the adapter that
    ``recboard.datasets.cache.load_or_build`` builds the prepared data with."""

    path: Path
    user: str | int
    item: str | int
    time: str | int
    sep: str
    header: bool
    kcore: int

    PREPROCESS_VERSION: ClassVar[int] = 1

    def cache_name(self) -> str:
        """A file-system-safe name for the prepared cache, distinct per path and options."""
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.path.stem)[:40]
        options = json.dumps([str(self.path), self.user, self.item, self.time, self.sep, self.header, self.kcore])
        return f"csv-{stem}-{hashlib.sha256(options.encode()).hexdigest()[:8]}"

    def source_files(self, name: str, data_dir) -> list:
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found (the file named by --dataset csv:...)")
        return [self.path]

    def build(self, name: str, data_dir, download: bool):
        from recboard.datasets import parsing as P
        from recboard.datasets.batches import SequenceData

        df = read_interactions(self)
        raw_rows = len(df)
        if self.kcore > 1:
            df = P.k_core(df, self.kcore)
            if df.is_empty():
                raise ValueError(f"{self.path}: nothing is left after {self.kcore}-core filtering")
        seq = P.sequences(df.select("user", "item", "time", "line_no"), ["time", "line_no"])
        stats = {**seq["stats"], "source": str(self.path), "raw_interactions": raw_rows,
                 "filtering": f"iterative {self.kcore}-core" if self.kcore > 1 else "none",
                 "dropped_interactions": raw_rows - len(df),
                 "columns": f"user={self.user}, item={self.item}, time={self.time}"}
        return SequenceData(name, seq["n_items"], seq["offsets"], seq["items"],
                            raw_item_ids=seq["raw_item_ids"], stats=stats)


# --------------------------------------------------------------------------- the name

def parse_name(name: str) -> CsvSource:
    """``csv:PATH?key=value&...`` -> CsvSource (a ValueError names what is wrong)."""
    path, _, query = name[len("csv:"):].partition("?")
    if not path:
        raise ValueError(f"{name!r}: expected csv:PATH[?user=..&item=..&time=..&sep=..&header=..&kcore=..]")
    given = {}
    for pair in filter(None, query.split("&")):
        key, eq, value = pair.partition("=")
        if key not in OPTIONS or not eq:
            raise ValueError(f"{name!r}: expected options key=value with key one of {', '.join(OPTIONS)}, "
                             f"got {pair!r}")
        given[key] = value
    header = given.get("header", "1").lower()
    if header not in _TRUE + _FALSE:
        raise ValueError(f"{name!r}: header must be 1 or 0, got {given['header']!r}")
    header = header in _TRUE
    path = Path(path).expanduser().resolve()
    sep = given.get("sep", "\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    sep = "\t" if sep in ("tab", "\\t") else sep
    if len(sep) != 1:
        raise ValueError(f"{name!r}: sep must be one character (or tab), got {sep!r}")
    columns = {}
    for position, key in enumerate(("user", "item", "time"), start=1):
        value = given.get(key, {"time": "timestamp"}.get(key, key) if header else str(position))
        if not header and not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"{name!r}: with header=0, {key} must be a column number (1 = first), got {value!r}")
        columns[key] = value if header else int(value)
    kcore = given.get("kcore", "0")
    if not kcore.isdigit():
        raise ValueError(f"{name!r}: kcore must be a whole number >= 0, got {kcore!r}")
    return CsvSource(path, columns["user"], columns["item"], columns["time"], sep, header, int(kcore))


# --------------------------------------------------------------------------- parsing (polars)

def _layout(src: CsvSource) -> str:
    names = [str(c) for c in (src.user, src.item, src.time)]
    where = "columns" if src.header else "column numbers"
    return f"rows of user, item and time ({where} {', '.join(names)}) separated by {src.sep!r}"


def _check_header(src: CsvSource) -> int:
    """Number of fields per row; the header must name the three columns."""
    from recboard.datasets.parsing import format_error, line_text
    if src.path.stat().st_size == 0:
        from recboard.datasets.cache import DataFormatError
        raise DataFormatError(f"{src.path}: file is empty; expected {_layout(src)}")
    first = line_text(src.path, 1)
    fields = next(csv.reader([first], delimiter=src.sep), [])
    if not src.header:
        wanted = max(src.user, src.item, src.time)
        if len(fields) < wanted:
            raise format_error(src.path, 1, f"{_layout(src)}: at least {wanted} fields, found {len(fields)}",
                               got=first)
        return len(fields)
    missing = [c for c in (src.user, src.item, src.time) if c not in [f.strip() for f in fields]]
    if missing:
        # the usual mistake: a TSV read as CSV, or a ';' export from a spreadsheet
        other = next((o for o in ",;\t| " if o != src.sep and {src.user, src.item, src.time}
                      <= {f.strip() for f in first.split(o)}), None)
        hint = f"; the line looks separated by {other!r}: add &sep={'tab' if other == chr(9) else other}" \
            if other else " (name yours with csv:PATH?user=..&item=..&time=..)"
        raise format_error(src.path, 1, f"a header naming the columns {', '.join(map(repr, missing))} "
                                        f"separated by {src.sep!r}{hint}", got=first)
    return len(fields)


def _ragged_line_error(src: CsvSource, n_fields: int):
    """The first row whose field count differs from the first line's (polars only says that
    one does, not where)."""
    from recboard.datasets.parsing import format_error, line_text
    with open(src.path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=src.sep)
        for row in reader:
            if row and len(row) != n_fields:
                return format_error(src.path, reader.line_num, f"{n_fields} fields separated by {src.sep!r} "
                                                               f"like line 1, found {len(row)}",
                                    got=line_text(src.path, reader.line_num))
    return None


def _scan(src: CsvSource, n_fields: int):
    """(line_no, user, item, time) as strings; trailing blank lines dropped."""
    import polars as pl

    from recboard.datasets.cache import DataFormatError
    from recboard.datasets.parsing import first_bad_utf8_line
    names = {k: (v if src.header else f"field_{v}") for k, v in
             (("user", src.user), ("item", src.item), ("time", src.time))}
    # our own names for a header-less file: polars' defaults changed between versions
    new_columns = None if src.header else [f"field_{i}" for i in range(1, n_fields + 1)]
    # rows are numbered from the file's lines: polars keeps blank lines as all-null rows, so
    # row i is line i (a quoted field spanning lines would shift this; such files are rare)
    lazy = (pl.scan_csv(src.path, separator=src.sep, has_header=src.header, infer_schema=False,
                        new_columns=new_columns)
            .with_row_index("line_no", offset=2 if src.header else 1)
            .select("line_no", *[pl.col(c).str.strip_chars().alias(k) for k, c in names.items()]))
    try:
        df = lazy.collect()
    except pl.exceptions.ComputeError as e:
        if "utf-8" in str(e).lower() or "utf8" in str(e).lower():
            line_no, col = first_bad_utf8_line(src.path)
            raise DataFormatError(f"{src.path}, line {line_no}: expected UTF-8 text ({_layout(src)}), "
                                  f"found invalid byte(s) at column {col}") from None
        raise _ragged_line_error(src, n_fields) or DataFormatError(f"{src.path}: {e}") from None
    blank = pl.all_horizontal(pl.col(k).is_null() | (pl.col(k) == "") for k in names)
    filled = df.filter(~blank)
    if filled.is_empty():
        raise DataFormatError(f"{src.path}: no data rows; expected {_layout(src)}")
    return df.filter(pl.col("line_no") <= filled["line_no"].max())


def _as_integers_if_all_are(df, column: str):
    """Integer ids sort as numbers (like the built-in adapters' ids); text ids stay text.
    Only a lossless cast counts: "007" and "7" stay two ids."""
    import polars as pl
    ints = df[column].str.to_integer(strict=False)
    if ints.null_count() == 0 and ints.cast(pl.String).equals(df[column]):
        return df.with_columns(ints.alias(column))
    return df


def _sortable_time(df, src: CsvSource):
    """``time`` as numbers: integers, decimals, or a date/time (as epoch microseconds)."""
    import polars as pl

    from recboard.datasets.parsing import format_error, line_text
    col = df["time"]
    for parsed in (col.str.to_integer(strict=False), col.cast(pl.Float64, strict=False)):
        if parsed.null_count() == 0 and not parsed.is_nan().any():
            return df.with_columns(parsed.alias("time"))
    as_number = col.cast(pl.Float64, strict=False)
    if as_number[0] is not None:    # numbers from the first row on: a non-number is the error
        bad, expected = as_number.is_null() | as_number.is_nan(), "a number (e.g. unix seconds)"
    else:
        try:
            parsed = col.str.to_datetime(strict=False, time_unit="us")
        except pl.exceptions.PolarsError:
            parsed = pl.Series([None] * len(col), dtype=pl.Datetime("us"))
        if parsed[0] is None:
            bad, expected = parsed.is_null(), "a number (unix time) or an ISO 8601 date/time"
        elif parsed.null_count() == 0:
            return df.with_columns(parsed.dt.epoch("us").alias("time"))
        else:
            bad, expected = parsed.is_null(), f"a date/time in the format of the first row's {col[0]!r}"
    line_no = df.filter(bad)["line_no"][0]
    raise format_error(src.path, line_no, f"{expected} in column {src.time!r}", got=line_text(src.path, line_no))


def read_interactions(src: CsvSource):
    """The file as (line_no, user, item, time), every row checked; errors name file + line."""
    import polars as pl

    from recboard.datasets.parsing import format_error, line_text
    n_fields = _check_header(src)
    df = _scan(src, n_fields)
    for key in ("user", "item", "time"):
        empty = df.filter(pl.col(key).is_null() | (pl.col(key) == ""))
        if len(empty):
            line_no = empty["line_no"][0]
            raw = line_text(src.path, line_no)
            what = "an empty line" if not raw.strip() else f"no {key} value"
            raise format_error(src.path, line_no, f"{_layout(src)}; found {what}", got=raw or None)
    df = _sortable_time(df, src)
    for key in ("user", "item"):
        df = _as_integers_if_all_are(df, key)
    return df
