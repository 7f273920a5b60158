"""The one downloader (datasets and GloVe): stream a URL to a temp file with a progress bar,
verify its size and sha256, rename into place, and unpack zips atomically (downloaded ones,
and official zips a user put in a data dir).

Only the standard library and tqdm; no network is touched unless an adapter is asked to
download. When the network is unreachable the error says where to fetch the file by hand.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from recboard.datasets.files import atomic_dir, atomic_file, file_digest

CHUNK = 1 << 20
USER_AGENT = "recboard-dataset-downloader"


class DownloadError(RuntimeError):
    pass


def raw_dir(name: str) -> Path:
    """Where ``--download`` puts the official files of dataset ``name``."""
    from recboard.datasets.files import default_cache_dir
    return default_cache_dir() / "raw" / name


def source_root(name: str, data_dir) -> Path:
    """Where an adapter looks for its files: ``--data-dir`` if given, else ``raw_dir(name)``."""
    return Path(data_dir) if data_dir is not None else raw_dir(name)


def find_or_download(name: str, data_dir, download: bool, find, fetch_official):
    """``find(name, data_dir)``; when that raises FileNotFoundError and ``download`` is set,
    ``fetch_official(name)`` into ``raw_dir(name)`` and look again. A ``data_dir`` the user
    named is never filled behind their back: there a missing file stays an error."""
    try:
        return find(name, data_dir)
    except FileNotFoundError:
        if not (download and data_dir is None):
            raise
        fetch_official(name)
        return find(name, data_dir)


def missing_files_error(name: str, searched, wanted: str) -> FileNotFoundError:
    """The error every adapter raises when its files are not on disk: where it looked, what
    it wanted, and the three ways to fix it."""
    from recboard.datasets.registry import dataset_spec
    env = dataset_spec(name).env_var
    where = ", ".join(str(p) for p in searched)
    env_hint = f", set {env}=<folder>" if env else ""
    return FileNotFoundError(
        f"{name}: {wanted} not found (looked in {where}). Put the official files in a folder and "
        f"pass --data-dir <folder>{env_hint}, or run `bench prepare --dataset {name} --download` "
        f"to fetch them into {raw_dir(name)}.")


def _manual(url: str, manual_hint: str) -> str:
    hint = f" {manual_hint}" if manual_hint else ""
    return f"Download it manually from {url}.{hint}"


def fetch(url: str, dest, *, sha256: str | None = None, size: int | None = None, md5: str | None = None,
          manual_hint: str = "", timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (skipped if ``dest`` already exists). The bytes go to a
    temp file next to ``dest`` and are renamed into place only once they check out.

    Every download is checked: its size against ``size`` (else against the server's
    Content-Length, which catches a cut connection), and its sha256 (and md5) against the
    published ones when given. Where no checksum is published, the sha256 of what arrived is
    printed, so it can be compared with a colleague's copy or pinned."""
    dest = Path(dest)
    if dest.exists():
        return dest
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    received = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        # a failed check below raises inside atomic_file, which then drops the partial file
        with atomic_file(dest, suffix=".part") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            announced = int(announced) if announced and announced.isdigit() else None
            from tqdm.auto import tqdm
            with tqdm(total=size or announced, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=dest.name, leave=False) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    for h in digests.values():
                        h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            _verify(url, received, {k: h.hexdigest() for k, h in digests.items()},
                    size, announced, {"sha256": sha256, "md5": md5}, manual_hint)
    except urllib.error.HTTPError as e:        # reachable, but the file is not served (moved, 404, 409)
        raise DownloadError(f"could not download {url}: the server answered HTTP {e.code} {e.reason}. "
                            f"{_manual(url, manual_hint)}") from e
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {url} ({reason}); this machine may be offline. "
                            f"{_manual(url, manual_hint)}") from e
    return dest


def _verify(url: str, received: int, got: dict, size, announced, expected: dict, manual_hint: str) -> None:
    """Raise DownloadError unless what arrived matches every expectation we have."""
    # a published size outranks the server's word; without either there is nothing to compare
    want, source = (size, "expected") if size is not None else (announced, "announced by the server")
    if want is not None and received != want:
        raise DownloadError(f"{url}: received {received:,} bytes, {source} {want:,} "
                            f"(truncated or changed upstream). {_manual(url, manual_hint)}")
    for algo, want in expected.items():
        if want is not None and got[algo] != want.lower():
            raise DownloadError(f"{url}: {algo} {got[algo]} does not match the expected {want}; "
                                f"the file is corrupt or was changed upstream. {_manual(url, manual_hint)}")
    verified = "verified against the published sha256" if expected["sha256"] else \
        "no published sha256 to check it against" + (" (md5 verified)" if expected["md5"] else "")
    print(f"[recboard] downloaded {url}: {received:,} bytes, sha256 {got['sha256']} ({verified})",
          file=sys.stderr, flush=True)


def _strip_common_root(names: list) -> int:
    """1 if every member sits under one top-level folder (``ml-1m/ratings.dat``), else 0."""
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    nested = all(len(PurePosixPath(n).parts) > 1 or n.endswith("/") for n in names)
    return 1 if len(tops) == 1 and nested else 0


def unzip(archive, target, advice: str = "delete it and retry") -> Path:
    """Extract ``archive`` into the directory ``target`` (created atomically: a failed or
    interrupted extraction leaves nothing). A single top-level folder in the archive is
    flattened, so ``target`` holds the files themselves whichever way the zip was packed.
    ``advice`` ends the error messages (what the user should do about a bad archive)."""
    archive, target = Path(archive), Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{archive}: member {bad!r} fails its CRC check (corrupt archive); {advice}")
            names = zf.namelist()
            strip = _strip_common_root(names)
            with atomic_dir(target) as tmp:
                for info in zf.infolist():
                    parts = PurePosixPath(info.filename).parts[strip:]
                    if not parts or info.is_dir():
                        continue
                    if any(p in ("..", "") for p in parts) or PurePosixPath(info.filename).is_absolute():
                        raise DownloadError(f"{archive}: refusing unsafe member path {info.filename!r}")
                    out = tmp.joinpath(*parts)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:   # zlib: damaged compressed data
        raise DownloadError(f"{archive} is not a valid zip file ({e}): truncated or corrupt; {advice}") from e
    return target


def zip_members(archive) -> list:
    """Member file names of ``archive`` as ``unzip`` lays them out (one top folder stripped).
    Opening reads only the central directory at the end of the file, so a truncated or
    non-zip file fails here cheaply, before anything is written."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, EOFError) as e:
        raise DownloadError(f"{archive} is not a valid zip file ({e}): truncated or corrupt") from e
    strip = _strip_common_root(names)
    return [PurePosixPath(*PurePosixPath(n).parts[strip:]).as_posix() for n in names
            if not n.endswith("/") and len(PurePosixPath(n).parts) > strip]


def unzip_once(archive, target, advice: str = "delete it and retry") -> Path:
    """``unzip`` into ``target`` unless it is already there. Two processes racing both
    succeed: each unpacks into its own staging folder, the first rename wins, the other
    copy is dropped (so a process reading ``target`` never sees it replaced)."""
    target = Path(target)
    if target.is_dir():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}.unpacking")
    unzip(archive, staging, advice)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


def _local_zip_advice(official: str) -> str:
    return (f"expected {official}; download it again, or unzip it yourself and pass the folder "
            "holding its files as --data-dir")


def check_local_zip(archive, wanted: tuple, official: str) -> None:
    """Raise ``DataFormatError`` unless ``archive`` opens as a zip and has, at its top level
    (after ``unzip``'s flattening), every glob pattern of at least one alternative in
    ``wanted`` (``(("ratings.dat",), ("ml-1m.txt",))``). Reads only the zip's directory."""
    import fnmatch

    from recboard.datasets.cache import DataFormatError
    try:
        members = zip_members(archive)
    except DownloadError as e:
        raise DataFormatError(f"{e}; {_local_zip_advice(official)}") from None
    top_level = [m for m in members if "/" not in m]      # where the adapters look
    if not any(all(fnmatch.filter(top_level, pattern) for pattern in alt) for alt in wanted):
        shown = ", ".join(members[:8]) + (f", ... ({len(members)} files)" if len(members) > 8 else "")
        need = " or ".join(" + ".join(alt) for alt in wanted)
        raise DataFormatError(f"{archive} holds no {need} (it has: {shown or 'no files'}); "
                              f"{_local_zip_advice(official)}")


def unpack_local_zip(name: str, archive, wanted: tuple, official: str) -> Path:
    """The folder holding the contents of a zip found in a data dir (e.g. the official
    ``ml-1m.zip`` as downloaded), unpacked once per zip content into
    ``raw_dir(name)/<zip stem>-<sha256[:12]>/``, so a replaced zip is unpacked afresh.

    The zip is checked first (``check_local_zip``), so a truncated or wrong zip leaves no
    trace; a member failing its CRC check is found while unpacking, which is atomic.
    ``official`` names the file it should be, for the error messages."""
    from recboard.datasets.cache import DataFormatError
    archive = Path(archive)
    check_local_zip(archive, wanted, official)
    target = raw_dir(name) / f"{archive.stem}-{file_digest(archive)[:12]}"
    try:
        return unzip_once(archive, target, _local_zip_advice(official))
    except DownloadError as e:
        raise DataFormatError(str(e)) from None


def fetch_and_unzip(url: str, target, *, sha256: str | None = None, size: int | None = None,
                    md5: str | None = None, manual_hint: str = "", keep_archive: bool = False) -> Path:
    """Download the zip at ``url`` next to ``target`` (checked as ``fetch`` does) and unpack
    it into ``target``."""
    target = Path(target)
    if target.is_dir():
        return target
    archive = fetch(url, target.parent / PurePosixPath(url.split("?")[0]).name,
                    sha256=sha256, size=size, md5=md5, manual_hint=manual_hint)
    unzip(archive, target)
    if not keep_archive:
        archive.unlink()
    return target
