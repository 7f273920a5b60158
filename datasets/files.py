"""File helpers every part of recboard writes through: atomic files and directories, a
portable inter-process lock, and content hashes.

* ``atomic_file`` (a context manager yielding a binary file), ``atomic_write_bytes`` and
  ``atomic_write_text``: a reader sees the old file or the whole new one, never half (temp
  file in the same folder, fsync, ``os.replace``). The file gets the mode
  ``open(path, "w")`` would give it: an existing file keeps its mode, a new one gets
  ``0o666 & ~umask`` (``tempfile.mkstemp`` would make it 0600, unreadable to the group
  that shares a results folder).
* ``atomic_dir``: build a directory under a temp name, publish it with one rename.
* ``file_lock``: an exclusive lock through the ``filelock`` package (``fcntl`` does not
  exist on Windows), with a timeout that ends in an error saying what to do.
* ``file_digest`` (sha256 of every byte; remembered for big files, see there) and
  ``sha256_file``.

Only the standard library and ``filelock``: ``recboard.datasets`` imports nothing else of
ours, and ``models`` / ``benchmarks`` / ``leaderboard`` may all import this module.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

# files at least this big have their digest remembered (hashing 1 GB takes seconds; reading
# a remembered one, microseconds); smaller ones are simply hashed again
REMEMBER_DIGEST_MIN = 64 << 20
# a file modified this recently may still change within its mtime tick (coarse clocks, NFS):
# its digest is not remembered yet, as git does with "racily clean" index entries
RACY_WINDOW_NS = 3 * 10**9
LOCK_TIMEOUT_ENV = "RECBOARD_LOCK_TIMEOUT"
# Generous: the holder may be downloading and parsing MIND-large, which takes many minutes.
DEFAULT_LOCK_TIMEOUT_S = 3600.0


# --------------------------------------------------------------------------- atomic writes

def _create_exclusive(make, parent: Path, name: str, suffix: str):
    """(path, ``make(path)``) for a fresh random name next to ``parent / name``; ``make``
    must fail with FileExistsError when the name is taken. Unlike mkstemp / mkdtemp it lets
    the OS apply the umask (they force 0600 / 0700)."""
    for _ in range(100):
        candidate = parent / f".{name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        try:
            return candidate, make(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temp name next to {parent / name}")


@contextlib.contextmanager
def atomic_file(path, suffix: str = ".tmp"):
    """Yield a binary file that becomes ``path`` when the block ends without an exception
    (flushed, fsynced, then ``os.replace``d); on any exception (KeyboardInterrupt too) the
    temp file is deleted and ``path`` is untouched. Raise inside the block to reject what
    was written (a failed checksum)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    tmp, fd = _create_exclusive(lambda p: os.open(p, flags, 0o666), path.parent, path.name, suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            # replacing a file keeps its mode, as writing it in place would
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never
    half; an exception leaves the old file and no temp file."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """``atomic_write_bytes`` of ``text`` in UTF-8, newlines written as given ("\\n")."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(final_path):
    """Yield a fresh temp directory next to ``final_path``; on success it is renamed into place
    (replacing an existing directory), on any exception (KeyboardInterrupt too) it is deleted.
    The directory gets the mode ``mkdir`` gives under the umask, not mkdtemp's 0700."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp, _ = _create_exclusive(lambda p: os.mkdir(p, 0o777), final_path.parent, final_path.name, ".tmp")
    try:
        yield tmp
        if final_path.exists():
            # rename() cannot replace a non-empty directory: move the old one aside first.
            trash = Path(tempfile.mkdtemp(dir=final_path.parent, prefix=f".{final_path.name}.old-"))
            os.rename(final_path, trash / "old")
            os.rename(tmp, final_path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_temp_patterns(name: str) -> tuple[str, str]:
    """Glob patterns of what ``atomic_dir(<folder>/<name>*)`` leaves when SIGKILLed."""
    return f".{name}*.tmp", f".{name}*.old-*"


# --------------------------------------------------------------------------- locks

class LockTimeoutError(TimeoutError):
    """Another process held a ``file_lock`` for longer than the timeout."""


def lock_timeout() -> float:
    """Seconds ``file_lock`` waits: ``RECBOARD_LOCK_TIMEOUT`` or the default."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{LOCK_TIMEOUT_ENV} must be >= 0 seconds, got {raw!r}")
    return value


@contextlib.contextmanager
def file_lock(path, what: str, timeout: float | None = None):
    """Exclusive lock on ``path`` (created if needed) while preparing ``what``. Says so on
    stderr when it has to wait; after ``timeout`` seconds (default ``lock_timeout()``)
    raises ``LockTimeoutError`` naming the lock file and what to do."""
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout = lock_timeout() if timeout is None else float(timeout)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"[recboard] waiting for another process preparing {what} (lock {path})",
              file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise LockTimeoutError(
                f"gave up after {timeout:g} s waiting for the lock {path} while preparing {what}: "
                f"another process holds it. Let that process finish (or raise {LOCK_TIMEOUT_ENV}); "
                f"if no other recboard process is running, delete {path} and retry.") from None
    try:
        yield
    finally:
        lock.release()


# --------------------------------------------------------------------------- hashes

def sha256_file(path) -> str:
    """sha256 of every byte of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path, index_dir=None) -> str:
    """sha256 of every byte of ``path`` (the cache fingerprint of a source file).

    Hashing a multi-GB raw file takes seconds on every run, so for files of at least
    ``REMEMBER_DIGEST_MIN`` bytes the digest is remembered in ``index_dir`` (default
    ``<cache>/digests``), one small JSON file per source file, keyed by its absolute path,
    size, mtime_ns, ctime_ns and inode: rewriting, replacing or ``touch``-ing the file changes
    one of them (ctime cannot be set back), and then it is hashed again. The index is only a
    shortcut: an unreadable or stale entry means hashing again, never a wrong digest."""
    path = Path(path).resolve()
    st = path.stat()
    if st.st_size < REMEMBER_DIGEST_MIN:
        return sha256_file(path)
    key = [str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    entry = Path(index_dir or default_cache_dir() / "digests") / (
        hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        remembered = json.loads(entry.read_text())
        if remembered["key"] == key:
            return remembered["sha256"]
    digest = sha256_file(path)
    after = path.stat()
    # remember only a file that did not change while it was hashed and is not racily recent
    if [after.st_size, after.st_mtime_ns, after.st_ctime_ns] == key[1:4] and \
            time.time_ns() - max(after.st_mtime_ns, after.st_ctime_ns) > RACY_WINDOW_NS:
        with contextlib.suppress(OSError):     # a read-only cache only costs the shortcut
            atomic_write_text(entry, json.dumps({"key": key, "sha256": digest}))
    return digest


def default_cache_dir() -> Path:
    """Where prepared datasets, raw downloads and derived caches (GloVe matrices) live:
    ``$RECBOARD_CACHE``, else ``~/.cache/recboard``."""
    return Path(os.environ.get("RECBOARD_CACHE", Path.home() / ".cache" / "recboard"))
