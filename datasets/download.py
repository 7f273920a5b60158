"""Shared downloader: stream a URL to a temp file with a progress bar, verify size / md5,
rename into place, and unpack zips atomically.

Only the standard library and tqdm; no network is touched unless an adapter is asked to
download. When the network is unreachable the error says where to fetch the file by hand.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from recboard.datasets.cache import atomic_dir

CHUNK = 1 << 20
USER_AGENT = "recboard-dataset-downloader"


class DownloadError(RuntimeError):
    pass


def raw_dir(name: str) -> Path:
    """Where ``--download`` puts the official files of dataset ``name``."""
    from recboard.datasets.registry import default_cache_dir
    return default_cache_dir() / "raw" / name


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


def fetch(url: str, dest, *, md5: str | None = None, size: int | None = None,
          manual_hint: str = "", timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (skipped if ``dest`` already exists). The bytes go to a
    temp file next to ``dest`` and are renamed into place only once size and md5 check out."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.md5()
    received = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            total = response.headers.get("Content-Length")
            from tqdm.auto import tqdm
            with tqdm(total=int(total) if total else size, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=dest.name, leave=False) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if size is not None and received != size:
            raise DownloadError(f"{url}: received {received:,} bytes, expected {size:,} "
                                f"(truncated or changed upstream). {_manual(url, manual_hint)}")
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DownloadError(f"{url}: md5 {digest.hexdigest()} does not match the expected {md5}; "
                                f"the file is corrupt or was changed upstream. {_manual(url, manual_hint)}")
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:        # reachable, but the file is not served (moved, 404, 409)
        raise DownloadError(f"could not download {url}: the server answered HTTP {e.code} {e.reason}. "
                            f"{_manual(url, manual_hint)}") from e
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {url} ({reason}); this machine may be offline. "
                            f"{_manual(url, manual_hint)}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _strip_common_root(names: list) -> int:
    """1 if every member sits under one top-level folder (``ml-1m/ratings.dat``), else 0."""
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    nested = all(len(PurePosixPath(n).parts) > 1 or n.endswith("/") for n in names)
    return 1 if len(tops) == 1 and nested else 0


def unzip(archive, target) -> Path:
    """Extract ``archive`` into the directory ``target`` (created atomically: a failed or
    interrupted extraction leaves nothing). A single top-level folder in the archive is
    flattened, so ``target`` holds the files themselves whichever way the zip was packed."""
    archive, target = Path(archive), Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{archive}: member {bad!r} fails its CRC check; delete the file and retry")
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
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{archive} is not a valid zip file ({e}); delete it and retry") from e
    return target


def fetch_and_unzip(url: str, target, *, md5: str | None = None, size: int | None = None,
                    manual_hint: str = "", keep_archive: bool = False) -> Path:
    """Download the zip at ``url`` next to ``target`` and unpack it into ``target``."""
    target = Path(target)
    if target.is_dir():
        return target
    archive = fetch(url, target.parent / PurePosixPath(url.split("?")[0]).name,
                    md5=md5, size=size, manual_hint=manual_hint)
    unzip(archive, target)
    if not keep_archive:
        archive.unlink()
    return target
