"""vocseg.data.download: safe_extract refuses every member that would land outside its target (and then
changes nothing), and download_voc fails at once offline, refuses a pre-placed archive with the wrong md5
and extracts a verified one.

docs/reliability.md lists every fault tried here, what vocseg does about it, and the test that checks it.
"""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import time
from pathlib import Path

import pytest

import vocseg.data.download as download
from helpers import cli, snapshot
from vocseg.cli import main
from vocseg.data.download import download_voc, safe_extract, voc_archive_info
from vocseg.data.voc import VOCSegmentation
from vocseg.errors import VocsegError

# Every test gets its own stats cache and leaves torch's global state (threads, RNGs, flags) as it found it.
pytestmark = pytest.mark.usefixtures("vocseg_cache", "torch_global_state")

# ----------------------------------------------------------------------------- safe_extract


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "absolute",
        "symlink-outside",
        "write-through-symlink",
        "absolute-symlink",
        "hardlink-outside",
        "device",
    ],
)
def test_safe_extract_refuses_escaping_members_and_leaves_everything_as_before(case: str, tmp_path: Path) -> None:
    work = tmp_path / "work"  # everything under here must be unchanged afterwards
    dest = work / "dest"
    (dest / "VOCdevkit").mkdir(parents=True)
    (dest / "VOCdevkit" / "keep.txt").write_text("already here")
    (work / "outside.txt").write_text("outside")
    ok = _file("VOCdevkit/VOC2012/JPEGImages/ok.jpg")  # a harmless member first: it must not land either
    members = {
        "dotdot": [ok, _file("../evil.txt")],
        "absolute": [ok, _file(str(work / "abs-evil.txt"))],
        "symlink-outside": [ok, _link("VOCdevkit/escape", "../../outside.txt")],
        "write-through-symlink": [ok, _link("escape", ".."), _file("escape/evil.txt")],
        "absolute-symlink": [ok, _link("VOCdevkit/passwd", "/etc/passwd")],
        "hardlink-outside": [ok, _link("VOCdevkit/hard", "../outside.txt", tarfile.LNKTYPE)],
        "device": [ok, _device("VOCdevkit/null")],
    }[case]
    archive = _tar(tmp_path / f"{case}.tar", members)
    before = snapshot(work)
    with pytest.raises(VocsegError, match="refused to extract") as e:
        safe_extract(archive, dest)
    assert str(archive) in str(e.value)
    assert snapshot(work) == before
    assert not (tmp_path / "evil.txt").exists() and not Path("/abs-evil.txt").exists()


def test_safe_extract_extracts_a_clean_archive_without_overwriting(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    (dest / "VOCdevkit" / "VOC2012" / "mine.txt").write_text("mine")
    archive = _tar(
        tmp_path / "clean.tar",
        [
            _file("VOCdevkit/VOC2012/mine.txt", b"theirs"),
            _file("VOCdevkit/VOC2012/new.txt", b"new"),
            _link("VOCdevkit/VOC2012/alias.txt", "new.txt"),
        ],
    )
    safe_extract(archive, dest)
    voc = dest / "VOCdevkit" / "VOC2012"
    assert (voc / "mine.txt").read_text() == "mine" and (voc / "new.txt").read_text() == "new"
    assert (voc / "alias.txt").read_text() == "new"
    assert sorted(p.name for p in dest.iterdir()) == ["VOCdevkit"]  # no temporary folder left behind


# ----------------------------------------------------------------------------- download_voc


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: connecting fails at once, and a download attempt fails the test."""

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(download, "download_url", lambda *a, **k: pytest.fail("download_url must not be called"))


def test_download_offline_fails_at_once_naming_archive_url_and_root(no_network, tmp_path: Path, capsys) -> None:
    info = voc_archive_info()
    root = tmp_path / "datasets"
    t0 = time.monotonic()
    with pytest.raises(VocsegError) as e:
        download_voc(root)
    assert time.monotonic() - t0 < 2
    msg = str(e.value)
    for part in (info["filename"], info["url"], info["md5"], str(root / info["filename"]), "no network"):
        assert part in msg
    assert not (root / info["filename"]).exists()
    rc, err = cli(["download", "--root", root], capsys)
    assert rc == 2 and err.startswith("vocseg: error: cannot download VOC") and info["url"] in err


def test_download_refuses_a_preplaced_archive_with_a_wrong_md5(no_network, tmp_path: Path, capsys) -> None:
    info = voc_archive_info()
    archive = tmp_path / info["filename"]
    archive.write_bytes(b"half a download")
    with pytest.raises(VocsegError, match="md5") as e:
        download_voc(tmp_path)
    assert str(archive) in str(e.value) and info["md5"] in str(e.value)
    assert archive.read_bytes() == b"half a download"  # left for the user to inspect
    assert sorted(p.name for p in tmp_path.iterdir()) == [info["filename"]]  # nothing extracted
    rc, err = cli(["download", "--root", tmp_path], capsys)
    assert rc == 2 and str(archive) in err


def test_download_extracts_a_verified_preplaced_archive(
    no_network, tiny_voc: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    info = voc_archive_info()
    root = tmp_path / "datasets"
    root.mkdir()
    archive = root / info["filename"]
    with tarfile.open(archive, "w") as tar:
        tar.add(tiny_voc / "VOCdevkit", arcname="VOCdevkit")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(download, "voc_archive_info", lambda year="2012": {**info, "md5": md5})

    voc = download_voc(root)
    assert voc == root / "VOCdevkit" / "VOC2012"
    ds = VOCSegmentation(root, "train")
    assert len(ds) == 12 and ds.voc_root == voc
    image, mask = ds[0]
    assert image.shape[-2:] == mask.shape
    # Already extracted: a second call (or the CLI) just finds it, even with the archive gone.
    archive.unlink()
    assert download_voc(root) == voc
    capsys.readouterr()
    assert main(["download", "--root", str(root)]) == 0
    assert f"VOC 2012 ready at {voc}" in capsys.readouterr().out
