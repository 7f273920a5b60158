"""Polars helpers shared by the adapters: read a text file line by line, split and type its
fields, and turn (user, item, order) rows into ``SequenceData`` arrays.

Every check reports the first offending line as ``DataFormatError("<file>, line N: expected
..., got ...")``. Only the adapters' build paths import this module (it imports polars).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recboard.datasets.cache import DataFormatError

PREVIEW = 120


def format_error(path, line_no, expected: str, got=None) -> DataFormatError:
    msg = f"{path}, line {line_no}: expected {expected}"
    if got is not None:
        got = str(got)
        msg += f", got {(got[:PREVIEW] + '...') if len(got) > PREVIEW else got!r}"
    return DataFormatError(msg)


def line_text(path, line_no: int) -> str:
    """Line ``line_no`` of ``path`` as text, for error messages."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == line_no:
                return raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return ""


def first_bad_utf8_line(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return line_no, e.start + 1
    return 0, 0


def lines_frame(source) -> pl.DataFrame:
    """Columns ``line_no`` (1-based) and ``line``: every line of a file (or bytes), blank
    lines included."""
    if hasattr(pl, "scan_lines"):                     # recent polars
        lines = pl.scan_lines(source).collect()
    else:  # older polars: one CSV column that no separator or quote can split
        lines = pl.read_csv(source, has_header=False, separator="\x1f", quote_char=None,
                            new_columns=["line"], schema={"line": pl.String}).fill_null("")
    return lines.with_row_index("line_no", offset=1)


def read_lines(path, what: str, encoding: str = "utf-8") -> pl.DataFrame:
    """Columns ``line_no`` (1-based) and ``line`` of a text file.

    Trailing blank lines are dropped; an empty file, a blank line in the middle or bytes that
    are not valid ``encoding`` are errors naming the line. ``what`` describes one line.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: file is empty; expected lines of {what}")
    if encoding == "utf-8":
        try:
            df = lines_frame(path)
        except pl.exceptions.ComputeError as e:
            if "utf8" not in str(e).lower() and "utf-8" not in str(e).lower():
                raise DataFormatError(f"{path}: could not read lines: {e}") from e
            line_no, col = first_bad_utf8_line(path)
            raise DataFormatError(f"{path}, line {line_no}: expected UTF-8 text ({what}), "
                                  f"found invalid byte(s) at column {col}") from None
    else:  # small side files in legacy encodings (GroupLens movies.dat is latin-1)
        text = path.read_bytes().decode(encoding).encode("utf-8")
        df = lines_frame(text)
    blank = df["line"].str.strip_chars() == ""
    if blank.all():
        raise DataFormatError(f"{path}: file has no data lines; expected lines of {what}")
    last = int(df.filter(~blank)["line_no"].max())
    df = df.filter(pl.col("line_no") <= last)
    inner_blank = df.filter(pl.col("line").str.strip_chars() == "")
    if len(inner_blank):
        raise format_error(path, inner_blank["line_no"][0], f"{what} (only trailing lines may be blank), "
                                                            "got an empty line")
    return df


def read_header(path, header: str, what: str) -> None:
    """Line 1 of ``path`` must be ``header`` (surrounding whitespace aside); ``what`` describes
    the file for the errors."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: file is empty; expected {what}")
    with open(path, "rb") as f:
        got = f.readline().decode("utf-8-sig", errors="replace").strip()   # a BOM is no error
    if got != header:
        raise format_error(path, 1, f"the header {header!r} ({what})", got=got)


def read_numbers_fast(path, sep: str, schema: dict, skip_lines: int = 0) -> pl.DataFrame | None:
    """Columns ``line_no`` and ``schema``'s (name -> polars numeric dtype) of a big file of
    numbers, parsed in one vectorised pass; None unless every line past the first
    ``skip_lines`` parses cleanly (trailing blank lines aside).

    This only spares good files the line-by-line readers above: a file it cannot read
    (a missing, extra or non-numeric field, a blank line inside, a NaN, quotes) goes to
    them, and they name the line and what was expected. So it must accept nothing they
    reject: quotes are not special here (``"2"`` is no number in these formats)."""
    try:
        df = pl.read_csv(path, separator=sep, has_header=False, skip_rows=skip_lines, schema=schema,
                         quote_char=None)
    except (pl.exceptions.PolarsError, OSError):
        return None
    # a blank line is a row of nulls, so rows stay lines and trailing blank lines are dropped
    df = df.with_row_index("line_no", offset=skip_lines + 1)
    filled = df.filter(pl.any_horizontal(pl.col(c).is_not_null() for c in schema))
    if filled.is_empty():
        return None
    df = df.filter(pl.col("line_no") <= filled["line_no"][-1])
    floats = [c for c, dtype in schema.items() if dtype.is_float()]
    bad = pl.any_horizontal(*(pl.col(c).is_null() for c in schema), *(pl.col(c).is_nan() for c in floats))
    return None if df.select(bad.any()).item() else df


def split_fields(df: pl.DataFrame, path, sep: str, names: list, what: str,
                 normalize_spaces: bool = False) -> pl.DataFrame:
    """Split ``line`` on ``sep`` into exactly ``len(names)`` string columns (plus ``line_no``).

    ``normalize_spaces`` collapses runs of whitespace first (for space-separated files).
    """
    line = pl.col("line")
    if normalize_spaces:
        line = line.str.strip_chars().str.replace_all(r"\s+", " ")
    parts = df.select("line_no", "line", line.str.split(sep).alias("_parts"))
    bad = parts.filter(pl.col("_parts").list.len() != len(names))
    if len(bad):
        n_got = len(bad["_parts"][0])
        raise format_error(path, bad["line_no"][0],
                           f"{len(names)} fields separated by {sep!r} ({what}) but found {n_got}"
                           + _other_separator_hint(bad["line"][0], sep, len(names)),
                           got=bad["line"][0])
    return parts.select("line_no", "line", *[pl.col("_parts").list.get(i).alias(n)
                                             for i, n in enumerate(names)])


def _other_separator_hint(line: str, sep: str, n_fields: int) -> str:
    """' (the line looks separated by ',')' when another common separator would split it right:
    the usual mistake is a re-saved file (ratings.dat written back as CSV)."""
    others = ("::", "\t", ",", ";", "|") + (() if sep == "\t" else (" ",))  # titles hold spaces
    for other in others:
        if other != sep and other not in sep and len(line.strip().split(other)) == n_fields:
            return f" (the line looks separated by {other!r})"
    return ""


def to_int(df: pl.DataFrame, path, columns: dict) -> pl.DataFrame:
    """Cast string columns to Int64; ``columns`` maps column -> description for the error."""
    out = df.with_columns(pl.col(c).str.strip_chars().str.to_integer(strict=False).alias(c)
                          for c in columns)
    for c, desc in columns.items():
        bad = out.filter(pl.col(c).is_null())
        if len(bad):
            line_no = bad["line_no"][0]
            got = df.filter(pl.col("line_no") == line_no)[c][0]
            raise format_error(path, line_no, f"an integer {desc}", got=got)
    return out


def to_float(df: pl.DataFrame, path, columns: dict) -> pl.DataFrame:
    out = df.with_columns(pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).alias(c)
                          for c in columns)
    for c, desc in columns.items():
        bad = out.filter(pl.col(c).is_null() | pl.col(c).is_nan())
        if len(bad):
            line_no = bad["line_no"][0]
            raise format_error(path, line_no, f"a number {desc}",
                               got=df.filter(pl.col("line_no") == line_no)[c][0])
    return out


def require_at_least(df: pl.DataFrame, path, columns: dict, minimum: int,
                     expected: str = "{desc} >= {minimum}") -> pl.DataFrame:
    """Integer columns must be >= ``minimum``; ``columns`` maps column -> description and
    ``expected`` words the error (``{desc}`` and ``{minimum}`` are filled in)."""
    for c, desc in columns.items():
        bad = df.filter(pl.col(c) < minimum)
        if len(bad):
            raise format_error(path, bad["line_no"][0], expected.format(desc=desc, minimum=minimum),
                               got=bad[c][0])
    return df


def require_positive(df: pl.DataFrame, path, columns: dict) -> pl.DataFrame:
    """Ids in the BERT4Rec / GroupLens files are 1-based: 0 or a negative id means a broken or
    re-indexed file (0 would also collide with the padding index downstream)."""
    return require_at_least(df, path, columns, 1, "a positive {desc} (ids start at 1)")


def min_count_filter(df: pl.DataFrame, column: str, min_count: int) -> pl.DataFrame:
    return df.filter(pl.len().over(column) >= min_count)


def k_core(df: pl.DataFrame, k: int) -> pl.DataFrame:
    """Iteratively drop users and items with fewer than ``k`` interactions until stable."""
    while True:
        n = len(df)
        df = min_count_filter(min_count_filter(df, "item", k), "user", k)
        if len(df) == n:
            return df


def sequences(df: pl.DataFrame, order: list) -> dict:
    """``df`` has columns ``user``, ``item`` (any hashable dtype) and the ``order`` columns.

    Users get dense indices 0..U-1 and items 1..n in sorted order of their original ids;
    each user's items are sorted by ``order`` (a stable sort, so ties keep file order).
    Returns offsets, items, raw item ids (index 0 = "<pad>") and sequence-length stats.
    """
    item_ids = df["item"].unique().sort()
    user_ids = df["user"].unique().sort()
    # the sort moves only the columns it needs, in 32 bits: ML-20m has 20M rows
    df = df.select(
        pl.col("user").replace_strict(user_ids, pl.int_range(0, len(user_ids), eager=True),
                                      return_dtype=pl.Int32).alias("user_idx"),
        pl.col("item").replace_strict(item_ids, pl.int_range(1, len(item_ids) + 1, eager=True),
                                      return_dtype=pl.Int32).alias("item_idx"),
        *order,
    ).sort(["user_idx", *order], maintain_order=True)
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(df["user_idx"].to_numpy(), minlength=len(user_ids)), out=offsets[1:])
    lengths = np.diff(offsets)
    return {
        "offsets": offsets,
        "items": df["item_idx"].to_numpy().astype(np.int32),
        "raw_item_ids": ["<pad>", *item_ids.to_list()],
        "n_items": len(item_ids),
        "stats": {"users": int(len(user_ids)), "items": int(len(item_ids)), "interactions": int(len(df)),
                  "mean_seq_len": round(float(lengths.mean()), 3) if len(lengths) else 0.0,
                  "median_seq_len": float(np.median(lengths)) if len(lengths) else 0.0,
                  "max_seq_len": int(lengths.max()) if len(lengths) else 0,
                  "min_seq_len": int(lengths.min()) if len(lengths) else 0},
    }
