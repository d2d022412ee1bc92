"""Safe extraction: hostile archives are refused and nothing lands outside DEST."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from recastfit.errors import FetchError
from recastfit.hepdata import extract
from recastfit.hepdata.extract import extract_to, safe_extract


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str, data: bytes = b"payload") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _zip(path: Path, entries: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def _snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def box(tmp_path):
    """A sandbox: archives in ``box/in``, extraction to ``box/out/dest``; ``outside`` must stay empty."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


def _assert_refused(box: Path, archive: Path, match: str, **kw) -> None:
    before = _snapshot(box / "out") | {"dest"}
    dest = box / "out" / "dest"
    with pytest.raises(FetchError, match=match):
        extract_to(archive, dest, **kw)
    assert not dest.exists()
    assert _snapshot(box / "out") <= before, "a temp folder or file was left next to DEST"
    assert _snapshot(box / "outside") == set()
    assert not (box / "evil.txt").exists() and not (box.parent / "evil.txt").exists()


def test_traversal_tar_and_zip(box):
    tar = _tar(box / "in" / "t.tar.gz", [_file("ok.txt"), _file("../outside/evil.txt")])
    _assert_refused(box, tar, r"'\.\.' path component")
    zf = _zip(box / "in" / "t.zip", [("ok.txt", b"x", None), ("a/../../outside/evil.txt", b"x", None)])
    _assert_refused(box, zf, r"'\.\.' path component")


def test_absolute_path_tar_and_zip(box):
    target = str(box / "outside" / "evil.txt")
    tar = _tar(box / "in" / "a.tar", [_file(target)], mode="w")
    _assert_refused(box, tar, "absolute path")
    zf = _zip(box / "in" / "a.zip", [(target, b"x", None)])
    _assert_refused(box, zf, "absolute path")


def test_symlink_escapes(box):
    outside = str(box / "outside")
    cases = {
        "abs": [_link("link", outside), _file("ok.txt")],
        "dotdot": [_link("sub/link", "../../outside")],
        # each link looks inside on its own, but together they resolve outside
        "chain": [_link("up", "."), _link("x", "up/..")],
        "hardlink": [_file("a.txt"), _link("h", "../outside/evil.txt", tarfile.LNKTYPE)],
        # a file written 'through' a symlink of the same archive
        "through": [_link("d", outside), _file("d/evil.txt")],
    }
    for name, members in cases.items():
        archive = _tar(box / "in" / f"{name}.tar.gz", members)
        _assert_refused(box, archive, "refusing")
    zf = _zip(box / "in" / "l.zip", [("link", b"../../outside", stat.S_IFLNK | 0o777), ("ok", b"x", None)])
    _assert_refused(box, zf, "refusing symlink")


def test_device_and_fifo_refused(box):
    for kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        info = tarfile.TarInfo("dev")
        info.type = kind
        archive = _tar(box / "in" / f"dev{kind!r}.tar", [(info, None)], mode="w")
        _assert_refused(box, archive, "device, FIFO or special file")
    zf = _zip(box / "in" / "dev.zip", [("dev", b"", stat.S_IFCHR | 0o644)])
    _assert_refused(box, zf, "device, FIFO or special file")


def test_size_bomb_refused(box):
    # 20 MiB of zeros compress to ~20 kB
    bomb = _tar(box / "in" / "bomb.tar.gz", [_file("zeros.bin", bytes(20 * 2**20))])
    assert bomb.stat().st_size < 100_000
    _assert_refused(box, bomb, "exceeds the limit", max_bytes=2**20)
    zbomb = box / "in" / "bomb.zip"
    with zipfile.ZipFile(zbomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(20 * 2**20))
    _assert_refused(box, zbomb, "exceeds the limit", max_bytes=2**20)


def test_streamed_size_is_counted_too(box, monkeypatch):
    """The running byte count stops an archive whose declared sizes lie."""
    archive = _tar(box / "in" / "ok.tar.gz", [_file("a.bin", bytes(3000)), _file("b.bin", bytes(3000))])
    out = box / "out" / "raw"
    out.mkdir()
    monkeypatch.setattr(extract, "_Member", _shrinking_member(extract._Member))
    with pytest.raises(FetchError, match="exceeds the limit"):
        safe_extract(archive, out, max_bytes=5000)


def _shrinking_member(cls):
    def make(name, kind, size, target, ref):
        return cls(name, kind, 0, target, ref)  # declare 0 bytes

    return make


def test_not_an_archive(box):
    page = box / "in" / "page.tar.gz"
    page.write_text("<html>landing page</html>")
    _assert_refused(box, page, "not a tar or zip archive")


def test_damaged_archive(box):
    good = _tar(box / "in" / "g.tar.gz", [_file("a.txt", os.urandom(50_000))])
    bad = box / "in" / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _assert_refused(box, bad, "damaged or unreadable")


def test_good_archive_with_inside_links(box):
    archive = _tar(
        box / "in" / "good.tar.gz",
        [
            _file("pallet/BkgOnly.json", b"{}"),
            _link("pallet/alias.json", "BkgOnly.json"),
            _link("pallet/copy.json", "pallet/BkgOnly.json", tarfile.LNKTYPE),
            _file("./pallet/./README", b"r"),
        ],
    )
    dest = extract_to(archive, box / "out" / "dest", marker=("m.json", "{}"))
    assert (dest / "pallet" / "alias.json").is_symlink()
    assert (dest / "pallet" / "alias.json").read_bytes() == b"{}"
    assert (dest / "pallet" / "copy.json").read_bytes() == b"{}"
    assert (dest / "pallet" / "README").read_bytes() == b"r"
    assert (dest / "m.json").exists()
    assert _snapshot(box / "out") == {"dest"} | {f"dest/{p}" for p in _snapshot(dest)}


def test_interrupted_extraction_leaves_nothing_and_keeps_old_dest(box, monkeypatch):
    archive = _tar(box / "in" / "g.tar.gz", [_file(f"f{i}.txt", b"x" * 1000) for i in range(5)])
    dest = box / "out" / "dest"
    extract_to(archive, dest)
    before = {p: (dest / p).read_bytes() for p in _snapshot(dest)}
    calls = {"n": 0}
    real = extract._write_stream

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle
        return real(*args, **kw)

    monkeypatch.setattr(extract, "_write_stream", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_to(archive, dest)
    assert _snapshot(box / "out") == {"dest"} | {f"dest/{p}" for p in before}
    assert {p: (dest / p).read_bytes() for p in _snapshot(dest)} == before
