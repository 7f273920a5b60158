"""Fingerprinted, crash-safe cache of prepared datasets.

A prepared dataset lives in ``<cache_root>/<name>-<fp[:12]>/`` as

* ``arrays.npz``: every numpy array (uncompressed, so loading is a plain read), and
* ``meta.json``: text lists (titles, raw ids), scalars, stats, the shape and dtype of every
  array, and the size + sha256 of ``arrays.npz``.

The fingerprint is a sha256 over the dataset name, the adapter's ``PREPROCESS_VERSION`` and
the name, size and content hash of every source file, so editing a raw file or bumping the
preprocessing version gives a new directory and old runs keep pointing at what they used.

Safety rules: the build runs under a ``files.file_lock`` (two processes on a cold cache
build once, both succeed); the result is written into a temp directory and published with
one ``os.rename`` (``files.atomic_dir``); a truncated or edited cache fails its
size/checksum check and is rebuilt; a build that raises (or is interrupted) leaves nothing
behind. Loading needs only numpy.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from recboard.datasets.batches import Impressions, NewsData, SequenceData
from recboard.datasets.files import atomic_dir, file_digest, file_lock, sha256_file, stale_temp_patterns

CACHE_FORMAT = 1                 # layout of arrays.npz / meta.json (not the preprocessing)
_SPLITS = ("train", "valid", "test")
_IMPRESSION_FIELDS = ("user", "time", "hist_offsets", "hist", "cand_offsets", "cand", "label")


class DataFormatError(ValueError):
    """A source file does not look like the format it should be in (message names file + line)."""


# --------------------------------------------------------------------------- fingerprint

# Source digests are the sha256 of every byte (``files.file_digest``). Files of 256 MB or more
# were once fingerprinted from their size, head and tail only: their digests, hence the keys
# of their caches, changed, so those datasets are rebuilt once into new directories. A file
# that was hashed whole keeps its digest, so its cache stays valid and keeps its fingerprint
# (the identity recorded with past runs): no version constant needs a bump for this.
def fingerprint(name: str, preprocess_version: int, files) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"name": name, "preprocess_version": preprocess_version}).encode())
    for path in sorted((Path(p) for p in files), key=lambda p: p.name):
        h.update(json.dumps([path.name, path.stat().st_size, file_digest(path)]).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- (de)serialise

def _to_parts(data) -> tuple[dict, dict]:
    if isinstance(data, SequenceData):
        arrays = {"offsets": data.offsets, "items": data.items}
        meta = {"task": "sequence", "name": data.name, "n_items": int(data.n_items),
                "item_text": data.item_text, "raw_item_ids": data.raw_item_ids}
    elif isinstance(data, NewsData):
        arrays = {f"{split}.{f}": getattr(getattr(data, split), f)
                  for split in _SPLITS for f in _IMPRESSION_FIELDS}
        meta = {"task": "impression", "name": data.name, "n_users": int(data.n_users),
                "news_ids": data.news_ids, "titles": data.titles, "categories": data.categories}
    else:
        raise TypeError(f"adapter returned {type(data).__name__}, expected SequenceData or NewsData")
    meta["stats"] = data.stats
    return {k: np.ascontiguousarray(v) for k, v in arrays.items()}, meta


def _from_parts(arrays: dict, meta: dict):
    if meta["task"] == "sequence":
        return SequenceData(meta["name"], meta["n_items"], arrays["offsets"], arrays["items"],
                            item_text=meta["item_text"], raw_item_ids=meta["raw_item_ids"],
                            stats=meta["stats"])
    blocks = {split: Impressions(*(arrays[f"{split}.{f}"] for f in _IMPRESSION_FIELDS))
              for split in _SPLITS}
    return NewsData(meta["name"], meta["news_ids"], meta["titles"], meta["categories"],
                    blocks["train"], blocks["valid"], blocks["test"], meta["n_users"],
                    stats=meta["stats"])


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple, set)):
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in meta.json")


def save(directory: Path, data, fp: str, preprocess_version: int) -> Path:
    """Publish ``data`` at ``directory`` atomically."""
    arrays, meta = _to_parts(data)
    with atomic_dir(directory) as tmp:
        npz = tmp / "arrays.npz"
        np.savez(npz, **arrays)
        meta.update(cache_format=CACHE_FORMAT, fingerprint=fp, preprocess_version=preprocess_version,
                    arrays={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
                    npz_size=npz.stat().st_size, npz_sha256=sha256_file(npz))
        (tmp / "meta.json").write_text(json.dumps(meta, default=_json_default))
    return directory


class CorruptCacheError(Exception):
    pass


def load(directory: Path):
    """Load a prepared dataset; raise CorruptCacheError if anything does not match meta.json."""
    directory = Path(directory)
    npz = directory / "arrays.npz"
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("cache_format") != CACHE_FORMAT:
            raise CorruptCacheError(f"cache format {meta.get('cache_format')} != {CACHE_FORMAT}")
        if npz.stat().st_size != meta["npz_size"]:
            raise CorruptCacheError(f"{npz} has {npz.stat().st_size} bytes, meta.json says {meta['npz_size']}")
        if sha256_file(npz) != meta["npz_sha256"]:
            raise CorruptCacheError(f"{npz} checksum does not match meta.json")
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        expected = meta["arrays"]
        if set(arrays) != set(expected) or any(
                list(arrays[k].shape) != expected[k]["shape"] or str(arrays[k].dtype) != expected[k]["dtype"]
                for k in expected):
            raise CorruptCacheError(f"{npz} arrays do not match the shapes recorded in meta.json")
        data = _from_parts(arrays, meta)
    except CorruptCacheError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:   # missing file, bad JSON, bad zip
        raise CorruptCacheError(f"{directory}: {type(e).__name__}: {e}") from e
    data.stats["fingerprint"] = meta["fingerprint"]
    data.stats["cache_path"] = str(directory)
    return data


# --------------------------------------------------------------------------- entry point

def _sources_or_none(adapter, name, data_dir, download):
    """The adapter's source files; None when they are absent but may be downloaded."""
    try:
        return adapter.source_files(name, data_dir)
    except FileNotFoundError:
        if download and data_dir is None:
            return None
        raise


def _try_load(directory: Path, quiet: bool = False):
    if not directory.is_dir():
        return None
    try:
        return load(directory)
    except CorruptCacheError as e:
        if not quiet:      # the first, lock-free attempt stays quiet; the locked retry reports
            print(f"[recboard] cache {directory} is damaged ({e}); rebuilding", file=sys.stderr, flush=True)
        return None


def _latest_prepared(name: str, cache_root: Path, version: int):
    """Newest intact cache of ``name`` (used when the raw files are not on this machine)."""
    candidates = sorted(cache_root.glob(f"{name}-" + "[0-9a-f]" * 12),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for directory in candidates:
        with contextlib.suppress(OSError, ValueError, CorruptCacheError):
            if json.loads((directory / "meta.json").read_text()).get("preprocess_version") == version:
                return load(directory)
    return None


def _remove_stale_temps(cache_root: Path, name: str):
    """Temp dirs left by a build that was SIGKILLed (we hold the lock, so none is in use)."""
    for pattern in stale_temp_patterns(f"{name}-"):
        for tmp in cache_root.glob(pattern):
            shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(name: str, adapter, data_dir, cache_root, download: bool = False):
    """Prepared dataset ``name`` from ``cache_root``, building it with ``adapter`` when missing.

    If the raw files are absent (and ``data_dir`` was not given) but a prepared cache of
    ``name`` is present, that cache is used: a GPU box needs neither polars nor raw files.
    """
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    version = adapter.PREPROCESS_VERSION
    data_dir = None if data_dir is None else Path(data_dir)

    try:
        files = _sources_or_none(adapter, name, data_dir, download)
    except FileNotFoundError:
        if data_dir is None:
            prepared = _latest_prepared(name, cache_root, version)
            if prepared is not None:
                print(f"[recboard] raw files for {name} not found; using prepared cache "
                      f"{prepared.stats['cache_path']}", file=sys.stderr, flush=True)
                return prepared
        raise
    fp = None if files is None else fingerprint(name, version, files)
    if fp is not None:
        data = _try_load(cache_root / f"{name}-{fp[:12]}", quiet=True)
        if data is not None:
            return data

    with file_lock(cache_root / f".{name}.lock", name):
        built = None
        if files is None:
            files = _sources_or_none(adapter, name, data_dir, download)   # another process may have fetched them
            if files is None:
                built = adapter.build(name, data_dir, True)              # downloads, then parses
                files = adapter.source_files(name, data_dir)
            fp = fingerprint(name, version, files)
        directory = cache_root / f"{name}-{fp[:12]}"
        data = _try_load(directory)                                      # built while we waited?
        if data is not None:
            return data
        _remove_stale_temps(cache_root, name)
        if built is None:
            built = adapter.build(name, data_dir, download)
        save(directory, built, fp, version)
    return load(directory)
