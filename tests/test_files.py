"""recboard.datasets.files: atomic writes keep the umask's mode and leave no temp file,
atomic directories, the portable lock (timeout, message, no fcntl), content hashes."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recboard.datasets import files
from recboard.datasets.files import (LockTimeoutError, atomic_dir, atomic_file, atomic_write_bytes,
                                     atomic_write_text, file_digest, file_lock, sha256_file)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_new_files_get_the_umask_mode_not_0600(tmp_path, umask_022):
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert _mode(tmp_path / "atomic.bin") == _mode(tmp_path / "plain.txt") == 0o644
    assert _mode(tmp_path / "atomic.txt") == 0o644
    os.chmod(tmp_path / "atomic.txt", 0o640)              # replacing a file keeps its mode
    atomic_write_text(tmp_path / "atomic.txt", "y")
    assert _mode(tmp_path / "atomic.txt") == 0o640
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "a").write_text("a")
    os.mkdir(tmp_path / "plain_folder")
    assert _mode(tmp_path / "folder") == _mode(tmp_path / "plain_folder") == 0o755


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second" and os.listdir(target.parent) == ["file.bin"]
    atomic_write_text(target, "caf\u00e9\n")
    assert target.read_bytes() == "caf\u00e9\n".encode()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"third")
    monkeypatch.undo()
    assert target.read_bytes() == "caf\u00e9\n".encode() and os.listdir(target.parent) == ["file.bin"]

    with pytest.raises(KeyboardInterrupt):                # interrupted mid-write
        with atomic_file(target) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == "caf\u00e9\n".encode() and os.listdir(target.parent) == ["file.bin"]


def test_atomic_dir_publishes_whole_or_nothing(tmp_path):
    final = tmp_path / "d" / "final"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("one")
        assert not final.exists()
    with atomic_dir(final) as tmp:                        # replaces an existing directory
        (tmp / "b.txt").write_text("two")
    assert os.listdir(final) == ["b.txt"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "d" / "never") as tmp:
            (tmp / "c.txt").write_text("partial")
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path / "d")) == ["final"]


def test_lock_held_elsewhere_times_out_naming_the_lock(tmp_path, capsys):
    from filelock import FileLock

    path = tmp_path / "locks" / ".ml-1m.lock"
    path.parent.mkdir()
    holder = FileLock(str(path))
    holder.acquire()
    try:
        with pytest.raises(LockTimeoutError) as err:
            with file_lock(path, "ml-1m", timeout=0.2):
                pytest.fail("got a lock another holder has")
    finally:
        holder.release()
    message = str(err.value)
    assert isinstance(err.value, TimeoutError)
    assert str(path) in message and "ml-1m" in message and "delete" in message
    assert f"waiting for another process preparing ml-1m (lock {path})" in capsys.readouterr().err
    with file_lock(path, "ml-1m", timeout=0.2):           # released: free to take
        pass


def test_lock_timeout_comes_from_the_environment(tmp_path, monkeypatch):
    from filelock import FileLock

    monkeypatch.setenv("RECBOARD_LOCK_TIMEOUT", "0.1")
    assert files.lock_timeout() == 0.1
    holder = FileLock(str(tmp_path / "x.lock"))
    holder.acquire()
    try:
        with pytest.raises(LockTimeoutError, match="0.1 s"):
            with file_lock(tmp_path / "x.lock", "x"):
                pass
    finally:
        holder.release()
    monkeypatch.setenv("RECBOARD_LOCK_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="RECBOARD_LOCK_TIMEOUT"):
        files.lock_timeout()
    monkeypatch.delenv("RECBOARD_LOCK_TIMEOUT")
    assert files.lock_timeout() == files.DEFAULT_LOCK_TIMEOUT_S


def test_works_without_fcntl(tmp_path):
    """Windows has no fcntl: the data path must import and lock without it."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["fcntl"] = None                  # any `import fcntl` now fails
        from recboard.datasets import cache, download, files
        from recboard.datasets.files import file_lock
        with file_lock(__import__("pathlib").Path({str(tmp_path / "a.lock")!r}), "test", timeout=1):
            pass
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
    imports_fcntl = re.compile(r"^\s*(import|from)\s+fcntl\b", re.MULTILINE)
    offenders = [str(p.relative_to(REPO)) for p in REPO.rglob("*.py")
                 if ".git" not in p.parts and "tests" not in p.parts
                 and imports_fcntl.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_hashes(tmp_path, monkeypatch):
    import hashlib

    small = tmp_path / "small.bin"
    small.write_bytes(b"abc" * 1000)
    assert sha256_file(small) == file_digest(small) == hashlib.sha256(b"abc" * 1000).hexdigest()
    monkeypatch.setattr(files, "REMEMBER_DIGEST_MIN", 1000)
    assert file_digest(small, tmp_path / "index") == sha256_file(small)   # big files too: every byte
