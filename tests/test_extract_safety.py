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


def test_links_are_refused_outright(box):
    """Pallets never need links: every symlink or hard link is refused, pointing inside or not."""
    outside = str(box / "outside")
    cases = {
        "abs": [_link("link", outside), _file("ok.txt")],
        "dotdot": [_link("sub/link", "../../outside")],
        "chain": [_link("up", "."), _link("x", "up/..")],
        # issue 10: c -> a/b/../.. stored before a/b -> ..
        "chain2": [_link("c", "a/b/../.."), _link("a/b", "..")],
        "hardlink": [_file("a.txt"), _link("h", "../outside/evil.txt", tarfile.LNKTYPE)],
        "through": [_link("d", outside), _file("d/evil.txt")],
        "inside": [_file("BkgOnly.json", b"{}"), _link("alias.json", "BkgOnly.json")],
        "inside-hard": [_file("BkgOnly.json", b"{}"), _link("copy.json", "BkgOnly.json", tarfile.LNKTYPE)],
    }
    for name, members in cases.items():
        archive = _tar(box / "in" / f"{name}.tar.gz", members)
        _assert_refused(box, archive, "(symbolic|hard) link")
    zf = _zip(box / "in" / "l.zip", [("link", b"../../outside", stat.S_IFLNK | 0o777), ("ok", b"x", None)])
    _assert_refused(box, zf, "symbolic link")
    zf = _zip(
        box / "in" / "in.zip", [("BkgOnly.json", b"{}", None), ("a", b"BkgOnly.json", stat.S_IFLNK | 0o777)]
    )
    _assert_refused(box, zf, "symbolic link")


def test_duplicate_and_clashing_names(box):
    _assert_refused(box, _tar(box / "in" / "d.tar", [_file("a"), _file("./a")], mode="w"), "appears twice")
    _assert_refused(box, _tar(box / "in" / "c.tar", [_file("a"), _file("a/b")], mode="w"), "name of a file")
    zf = _zip(box / "in" / "d.zip", [("a/x", b"1", None), ("a//x", b"2", None)])
    _assert_refused(box, zf, "appears twice")


def test_member_count_and_metadata_header_caps(box):
    many = _tar(box / "in" / "many.tar.gz", [_file(f"f{i}", b"") for i in range(30)])
    with pytest.raises(FetchError, match="more than 20 members"):
        safe_extract(many, box / "out", max_members=20)
    zmany = _zip(box / "in" / "many.zip", [(f"f{i}", b"", None) for i in range(30)])
    with pytest.raises(FetchError, match="30 members"):
        safe_extract(zmany, box / "out", max_members=20)
    # a 4 MB pax header compresses to a few kB; tarfile would read it whole into memory
    info = tarfile.TarInfo("x")
    info.pax_headers = {"comment": "a" * (4 << 20)}
    pax = box / "in" / "pax.tar.gz"
    with tarfile.open(pax, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"x"))
    _assert_refused(box, pax, "metadata header")
    assert list((box / "out").iterdir()) == []


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


def test_truncated_plain_tar_is_damaged(box):
    good = _tar(box / "in" / "g.tar", [_file("a.txt", os.urandom(50_000))], mode="w")
    bad = box / "in" / "bad.tar"
    bad.write_bytes(good.read_bytes()[:30_000])
    _assert_refused(box, bad, "truncated")


def test_not_an_archive(box):
    page = box / "in" / "page.tar.gz"
    page.write_text("<html>landing page</html>")
    _assert_refused(box, page, "not a tar or zip archive")


def test_damaged_archive(box):
    good = _tar(box / "in" / "g.tar.gz", [_file("a.txt", os.urandom(50_000))])
    bad = box / "in" / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _assert_refused(box, bad, "damaged or unreadable")


def test_good_archive_extracts_files_and_folders(box):
    archive = _tar(
        box / "in" / "good.tar.gz",
        [_file("pallet/BkgOnly.json", b"{}"), _file("./pallet/./README", b"r")],
    )
    dest = extract_to(archive, box / "out" / "dest", marker=("m.json", "{}"))
    assert (dest / "pallet" / "BkgOnly.json").read_bytes() == b"{}"
    assert (dest / "pallet" / "README").read_bytes() == b"r"
    assert (dest / "m.json").exists()
    assert _snapshot(box / "out") == {"dest"} | {f"dest/{p}" for p in _snapshot(dest)}
    zf = _zip(box / "in" / "good.zip", [("p/", b"", None), ("p/BkgOnly.json", b"{}", None)])
    assert (extract_to(zf, box / "out" / "z") / "p" / "BkgOnly.json").read_bytes() == b"{}"


def test_interrupted_extraction_leaves_nothing_and_keeps_old_dest(box, monkeypatch):
    archive = _zip(box / "in" / "g.zip", [(f"f{i}.txt", b"x" * 1000, None) for i in range(5)])
    dest = box / "out" / "dest"
    extract_to(archive, dest)
    before = {p: (dest / p).read_bytes() for p in _snapshot(dest)}
    calls = {"n": 0}
    real = extract._zip_write

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle
        return real(*args, **kw)

    monkeypatch.setattr(extract, "_zip_write", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_to(archive, dest)
    assert _snapshot(box / "out") == {"dest"} | {f"dest/{p}" for p in before}
    assert {p: (dest / p).read_bytes() for p in _snapshot(dest)} == before
