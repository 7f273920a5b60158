"""The prepared-data cache: fingerprints, round trips, corruption, failed builds, two
processes on a cold cache, leftovers of a killed build, and loading without polars (the
atomic helpers themselves: test_files.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from recboard.datasets import cache, files, synthetic
from recboard.datasets.cache import load_or_build
from recboard.datasets.files import atomic_dir

REPO = Path(__file__).resolve().parents[1]


class CountingAdapter(types.SimpleNamespace):
    """An adapter whose build is a small synthetic dataset; counts builds."""

    def __init__(self, source: Path, version: int = 1, fail_with=None):
        super().__init__(PREPROCESS_VERSION=version, builds=0, source=source, fail_with=fail_with)

    def source_files(self, name, data_dir):
        return [self.source]

    def build(self, name, data_dir, download):
        self.builds += 1
        if self.fail_with is not None:
            raise self.fail_with
        return synthetic.generate_sequences(n_users=30, n_items=40, seed=int(self.source.read_text()))


def dirs(root: Path) -> list:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "raw" / "ratings.txt"
    path.parent.mkdir()
    path.write_text("7")
    return path


def test_sequence_and_news_round_trip(tmp_path):
    seq = synthetic.generate_sequences(n_users=20, n_items=30, seed=3)
    news = synthetic.generate_news(n_news=60, n_users=15, n_train=50, n_test=20, seed=3)
    for data in (seq, news):
        directory = cache.save(tmp_path / data.name, data, "ab" * 32, 1)
        back = cache.load(directory)
        assert type(back) is type(data) and back.stats["fingerprint"] == "ab" * 32
        assert back.stats["cache_path"] == str(directory) and back.item_text == data.item_text
        meta = json.loads((directory / "meta.json").read_text())
        assert meta["preprocess_version"] == 1 and meta["npz_size"] == (directory / "arrays.npz").stat().st_size
    back = cache.load(tmp_path / seq.name)
    np.testing.assert_array_equal(back.items, seq.items)
    assert back.items.dtype == np.int32 and back.raw_item_ids == seq.raw_item_ids
    back = cache.load(tmp_path / news.name)
    for split in ("train", "valid", "test"):
        for field in ("user", "time", "hist_offsets", "hist", "cand_offsets", "cand", "label"):
            a, b = getattr(getattr(back, split), field), getattr(getattr(news, split), field)
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
    assert back.news_ids == news.news_ids and back.categories == news.categories and back.n_users == 15


def test_builds_once_then_reads_and_fingerprint_tracks_inputs(tmp_path, source):
    adapter, root = CountingAdapter(source), tmp_path / "cache"
    first = load_or_build("toy", adapter, source.parent, root, False)
    second = load_or_build("toy", adapter, source.parent, root, False)
    assert adapter.builds == 1
    fp = first.stats["fingerprint"]
    assert len(fp) == 64 and second.stats["fingerprint"] == fp
    assert dirs(root) == [f"toy-{fp[:12]}"] and Path(first.stats["cache_path"]).name == f"toy-{fp[:12]}"
    np.testing.assert_array_equal(first.items, second.items)

    source.write_text("8")                                   # new content -> new fingerprint, rebuild
    changed = load_or_build("toy", adapter, source.parent, root, False)
    assert adapter.builds == 2 and changed.stats["fingerprint"] != fp
    bumped = CountingAdapter(source, version=2)              # new preprocessing version -> rebuild
    assert load_or_build("toy", bumped, source.parent, root, False).stats["fingerprint"] not in (
        fp, changed.stats["fingerprint"])
    assert bumped.builds == 1 and len(dirs(root)) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip-byte", "bad-meta", "missing-npz"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, source, damage):
    adapter, root = CountingAdapter(source), tmp_path / "cache"
    good = load_or_build("toy", adapter, source.parent, root, False)
    directory = Path(good.stats["cache_path"])
    npz = directory / "arrays.npz"
    if damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:-100])
    elif damage == "flip-byte":                               # same size, different content
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        npz.write_bytes(bytes(raw))
    elif damage == "bad-meta":
        (directory / "meta.json").write_text('{"cache_format": 1, "npz_si')
    else:
        npz.unlink()
    with pytest.raises(cache.CorruptCacheError):
        cache.load(directory)
    rebuilt = load_or_build("toy", adapter, source.parent, root, False)
    assert adapter.builds == 2
    np.testing.assert_array_equal(rebuilt.items, good.items)
    assert dirs(root) == [directory.name]                     # replaced in place, no leftovers


@pytest.mark.parametrize("error", [RuntimeError("parser exploded"), KeyboardInterrupt()])
def test_failed_build_leaves_no_directory(tmp_path, source, error):
    root = tmp_path / "cache"
    with pytest.raises(type(error)):
        load_or_build("toy", CountingAdapter(source, fail_with=error), source.parent, root, False)
    assert dirs(root) == []


def test_interrupted_write_leaves_no_directory(tmp_path, source, monkeypatch):
    root = tmp_path / "cache"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_or_build("toy", CountingAdapter(source), source.parent, root, False)
    assert dirs(root) == []


def test_two_processes_on_a_cold_cache_build_once(tmp_path, source):
    # The adapter sleeps while building and appends to a log, so overlapping builds would show.
    (tmp_path / "slow_adapter.py").write_text(textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from recboard.datasets import synthetic
        PREPROCESS_VERSION = 1
        def source_files(name, data_dir):
            return [Path({str(source)!r})]
        def build(name, data_dir, download):
            with open({str(tmp_path / 'builds.log')!r}, 'a') as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(1.0)
            return synthetic.generate_sequences(n_users=30, n_items=40, seed=1)
    """))
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from pathlib import Path
        import slow_adapter
        from recboard.datasets.cache import load_or_build
        data = load_or_build("toy", slow_adapter, None, Path({str(tmp_path / 'cache')!r}), False)
        print(data.stats["fingerprint"], int(data.items.sum()))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0] and outs[0][0].strip()
    assert len((tmp_path / "builds.log").read_text().split()) == 1
    assert len(dirs(tmp_path / "cache")) == 1


def test_loading_from_cache_does_not_need_polars_or_raw_files(tmp_path, monkeypatch):
    ratings = tmp_path / "ml" / "ml-1m.txt"
    ratings.parent.mkdir()
    ratings.write_text("".join(f"{u} {i}\n" for u in range(1, 7) for i in (10, 20, 30, 40, 50)))
    from recboard.datasets.registry import load_dataset
    built = load_dataset("ml-1m", data_dir=ratings.parent, cache_dir=tmp_path / "cache")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["polars"] = None          # any 'import polars' now fails
        from recboard.datasets.registry import load_dataset
        a = load_dataset("ml-1m", data_dir={str(ratings.parent)!r}, cache_dir={str(tmp_path / 'cache')!r})
        b = load_dataset("ml-1m", cache_dir={str(tmp_path / 'cache')!r})   # raw files not found: use the cache
        assert a.stats["fingerprint"] == b.stats["fingerprint"]
        print(a.n_users, a.n_items, a.stats["fingerprint"])
    """)
    env = {**os.environ, "RECBOARD_CACHE": str(tmp_path / "empty-home")}
    env.pop("RECBOARD_ML1M_DIR", None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "5", built.stats["fingerprint"]]
    assert "using prepared cache" in out.stderr
    # with no prepared cache either, the error says how to get the files
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "empty-home"))
    monkeypatch.delenv("RECBOARD_ML1M_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="bench prepare --dataset ml-1m --download"):
        load_dataset("ml-1m", cache_dir=tmp_path / "other-cache")


def test_fingerprint_hashes_every_byte_and_remembers_big_files(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "home"))
    monkeypatch.setattr(files, "REMEMBER_DIGEST_MIN", 1000)     # "big" without writing 64 MB
    monkeypatch.setattr(files, "RACY_WINDOW_NS", -1)            # remember even a file written just now
    hashed = []
    real_sha256_file = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: hashed.append(Path(p).name) or real_sha256_file(p))
    big = tmp_path / "big.bin"
    raw = bytearray(os.urandom(5000))
    big.write_bytes(bytes(raw))
    fp = cache.fingerprint("x", 1, [big])
    assert cache.fingerprint("x", 1, [big]) == fp and hashed == ["big.bin"]   # re-run: remembered, not re-read
    assert len(list((tmp_path / "home" / "digests").glob("*.json"))) == 1
    raw[2500] ^= 1                                           # an edit in the middle is seen
    big.write_bytes(bytes(raw))
    # the edit lands a second later, as real ones do (the racy window covers same-tick edits)
    os.utime(big, ns=(big.stat().st_atime_ns, big.stat().st_mtime_ns + 10**9))
    assert cache.fingerprint("x", 1, [big]) != fp and hashed == ["big.bin"] * 2
    (tmp_path / "home" / "digests").joinpath(
        next(p.name for p in (tmp_path / "home" / "digests").glob("*.json"))).write_text("{broken")
    assert cache.fingerprint("x", 1, [big]) != fp and len(hashed) == 3    # a damaged entry: hashed again
    monkeypatch.setattr(files, "RACY_WINDOW_NS", 10**18)        # just written: not remembered
    small = tmp_path / "small.bin"
    small.write_bytes(b"a" * 1500)
    files.file_digest(small)
    files.file_digest(small)
    assert hashed[-2:] == ["small.bin", "small.bin"]
    assert cache.fingerprint("y", 1, [small]) != cache.fingerprint("x", 1, [small])


def test_temp_dirs_of_a_killed_build_are_swept(tmp_path, source):
    root = tmp_path / "cache"
    # entered, never exited (kept referenced: closing the generator would clean up): as if SIGKILLed
    builds = [atomic_dir(root / "toy-0123456789ab"), atomic_dir(root / "toyota-0123456789ab")]
    left, other = (build.__enter__() for build in builds)
    assert left.is_dir() and left.name.startswith(".toy-")
    load_or_build("toy", CountingAdapter(source), source.parent, root, False)
    assert not left.exists() and other.exists()               # only this dataset's leftovers
