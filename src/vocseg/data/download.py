"""Fetch PASCAL VOC 2012 with torchvision's download code, verify its checksum, extract it safely."""

from __future__ import annotations

import shutil
import socket
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from torchvision.datasets.utils import check_integrity, download_url
from torchvision.datasets.voc import DATASET_YEAR_DICT

from ..errors import VocsegError
from ..runtime.files import output_dir


def voc_archive_info(year: str = "2012") -> dict[str, str]:
    """torchvision's record for the VOC archive: url, filename, md5, base_dir."""
    return dict(DATASET_YEAR_DICT[year])


def _offline_message(root: Path, info: dict[str, str], reason: str) -> str:
    return (
        f"cannot download VOC {info['filename']} ({reason}).\n"
        f"Fetch it by hand from {info['url']}\n"
        f"(md5 {info['md5']}, about 2 GB), put it at {root / info['filename']}\n"
        f"and run `vocseg download --root {root}` again: it verifies the checksum and extracts it to "
        f"{root / info['base_dir']}."
    )


def _check_reachable(url: str, timeout: float = 5.0) -> None:
    """Fail fast when offline instead of waiting on urllib's retries."""
    host = urlparse(url).hostname or ""
    socket.create_connection((host, 443), timeout=timeout).close()


def _strict_data_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter, except that an absolute member name is refused instead of made relative."""
    if member.name.startswith(("/", "\\")) or Path(member.name).is_absolute():
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest_path)


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Extract a tar archive into ``dest`` with the ``data`` filter: absolute paths, ``..`` members and
    links leaving the folder are refused, and nothing is written outside ``dest``. Extraction goes to a
    temporary folder first, so a refused or failed archive leaves ``dest`` as it was."""
    if not hasattr(tarfile, "data_filter"):
        raise VocsegError(
            "safe archive extraction needs Python >= 3.10.12 or >= 3.11.4 (tarfile extraction filters); "
            "upgrade Python, or extract the archive by hand"
        )
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".vocseg-extract-", dir=dest))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter=_strict_data_filter)
        except (tarfile.FilterError, tarfile.TarError, OSError) as e:
            raise VocsegError(f"refused to extract {archive}: {e}") from None
        for item in tmp.iterdir():
            target = dest / item.name
            if target.exists():
                if target.is_dir() and item.is_dir():
                    _merge_new(item, target)
                    continue
                raise VocsegError(f"{target} already exists; not overwriting it with the copy from {archive}")
            item.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_new(src: Path, dst: Path) -> None:
    """Move files from src into dst, keeping (never overwriting) anything already in dst."""
    for item in src.iterdir():
        target = dst / item.name
        if not target.exists():
            item.rename(target)
        elif item.is_dir() and target.is_dir():
            _merge_new(item, target)


def fetch_verified_archive(
    root: Path, info: dict[str, str], offline_message: Callable[[Path, dict[str, str], str], str], command: str
) -> Path:
    """``root/info["filename"]``, md5-checked: a pre-placed archive is verified, a missing one downloaded
    (failing at once offline with ``offline_message``). A corrupt file is left where it is and named."""
    output_dir(root, "download folder")
    archive = root / info["filename"]
    if archive.exists():
        if not check_integrity(str(archive), info["md5"]):
            raise VocsegError(
                f"{archive} exists but its md5 is not {info['md5']}: the file is incomplete or corrupt. "
                f"Move it away and run `{command}` again."
            )
        return archive
    try:
        _check_reachable(info["url"])
    except OSError as e:
        raise VocsegError(offline_message(root, info, f"no network: {e}")) from None
    try:
        download_url(info["url"], str(root), info["filename"], info["md5"])
    except Exception as e:  # noqa: BLE001 - urllib, http and checksum errors all end the same way for the user
        raise VocsegError(offline_message(root, info, f"download failed: {e}")) from None
    if not check_integrity(str(archive), info["md5"]):
        raise VocsegError(f"downloaded {archive} does not match md5 {info['md5']}; delete it and retry")
    return archive


def download_voc(root: str | Path, year: str = "2012") -> Path:
    """Download (if needed), verify and extract VOC ``year`` under ``root``; return the VOC2012 folder."""
    root = Path(root).expanduser()
    info = voc_archive_info(year)
    voc_dir = root / info["base_dir"]
    if (voc_dir / "JPEGImages").is_dir() and (voc_dir / "SegmentationClass").is_dir():
        return voc_dir
    archive = fetch_verified_archive(root, info, _offline_message, f"vocseg download --root {root}")
    safe_extract(archive, root)
    if not voc_dir.is_dir():
        raise VocsegError(f"{archive} did not contain {info['base_dir']}")
    return voc_dir
