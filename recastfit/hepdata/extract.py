"""Safe extraction of pallet archives (tar.gz, tgz, tar, tar.bz2, tar.xz, zip).

Every member is checked before anything is written: absolute paths, ``..`` components,
device files, FIFOs and archives whose unpacked size exceeds ``max_bytes`` are refused.
Regular files are written with ``O_NOFOLLOW`` into a fresh folder; links are created last
(after every file is written, so nothing is ever written through a link) and each link's
resolved target must stay inside the folder. The extraction goes to a temporary folder
next to the target and is renamed into place only when complete, so an interrupted or
refused extraction leaves nothing behind.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recastfit.errors import FetchError

__all__ = [
    "archive_format",
    "safe_extract",
    "extract_to",
    "replace_dir",
    "staged_dir",
    "DEFAULT_MAX_UNPACKED_BYTES",
    "DEFAULT_MAX_MEMBERS",
]

DEFAULT_MAX_UNPACKED_BYTES = 4 * 2**30  # 4 GiB: the largest published pallets are a few hundred MB
DEFAULT_MAX_MEMBERS = 200_000
_CHUNK = 1 << 20


def archive_format(path: Path) -> str:
    """``'tar'`` or ``'zip'`` from the file's magic bytes; FetchError when it is neither."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    compressed = head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00"
    if compressed or head[257:262] == b"ustar":
        return "tar"
    raise FetchError(f"{path}: not a tar or zip archive (first bytes {head[:8]!r})")


@dataclass(frozen=True)
class _Member:
    name: str  # normalised relative posix path
    kind: str  # 'file' | 'dir' | 'symlink' | 'hardlink'
    size: int
    target: str | None  # link target (symlink: as stored; hardlink: normalised member name)
    ref: object  # TarInfo or ZipInfo


def _clean_name(archive: Path, raw: str) -> str | None:
    """The normalised relative name, or FetchError for absolute / escaping names."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or name.startswith("//"):
        raise FetchError(f"{archive}: refusing member {raw!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FetchError(f"{archive}: refusing member {raw!r}: '..' path component")
    return "/".join(parts) or None


def _tar_members(archive: Path, tar: tarfile.TarFile) -> Iterator[_Member]:
    for info in tar:
        name = _clean_name(archive, info.name)
        if name is None:
            continue
        known = info.isfile() or info.isdir() or info.issym() or info.islnk()
        if info.isdev() or info.isfifo() or not known:
            raise FetchError(f"{archive}: refusing member {info.name!r}: device, FIFO or special file")
        if info.isdir():
            yield _Member(name, "dir", 0, None, info)
        elif info.issym():
            yield _Member(name, "symlink", 0, info.linkname, info)
        elif info.islnk():
            try:
                target = _clean_name(archive, info.linkname)
            except FetchError:
                target = None
            if target is None:
                raise FetchError(
                    f"{archive}: refusing hard link {info.name!r} -> {info.linkname!r}: outside the folder"
                )
            yield _Member(name, "hardlink", 0, target, info)
        else:
            yield _Member(name, "file", info.size, None, info)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zf.infolist():
        name = _clean_name(archive, info.filename)
        if name is None:
            continue
        mode = info.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        if fmt and fmt not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
            raise FetchError(f"{archive}: refusing member {info.filename!r}: device, FIFO or special file")
        if info.is_dir():
            yield _Member(name, "dir", 0, None, info)
        elif fmt == stat.S_IFLNK:
            if info.file_size > 4096:
                raise FetchError(f"{archive}: refusing symlink {info.filename!r}: target too long")
            target = zf.read(info).decode("utf-8", "replace")
            yield _Member(name, "symlink", 0, target, info)
        else:
            yield _Member(name, "file", info.file_size, None, info)


def _check_link(archive: Path, member: _Member) -> None:
    """Lexical check that a link's target stays inside the extraction folder."""
    target = member.target or ""
    if member.kind == "hardlink":
        return  # already a cleaned member name
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        raise FetchError(f"{archive}: refusing symlink {member.name!r} -> {target!r}: absolute target")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise FetchError(
            f"{archive}: refusing symlink {member.name!r} -> {target!r}: points outside the folder"
        )


def _inside(root: Path, path: Path) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def _write_stream(src, dest: Path, budget: list[int], archive: Path, max_bytes: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(dest, flags, 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            budget[0] += len(chunk)
            if budget[0] > max_bytes:
                raise FetchError(
                    f"{archive}: unpacked size exceeds the limit of {max_bytes} bytes "
                    "(max_unpacked_bytes); refusing to extract"
                )
            out.write(chunk)


def safe_extract(
    archive: Path,
    out: Path,
    *,
    max_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> None:
    """Extract ``archive`` into the existing empty folder ``out`` after checking every member."""
    archive, out = Path(archive), Path(out)
    fmt = archive_format(archive)
    with _open(archive, fmt) as (handle, members):
        if len(members) > max_members:
            raise FetchError(f"{archive}: {len(members)} members exceed the limit of {max_members}")
        declared = sum(m.size for m in members)
        if declared > max_bytes:
            raise FetchError(
                f"{archive}: unpacked size {declared} bytes exceeds the limit of {max_bytes} bytes "
                "(max_unpacked_bytes); refusing to extract"
            )
        for m in members:
            if m.kind in ("symlink", "hardlink"):
                _check_link(archive, m)
        budget = [0]
        links: list[_Member] = []
        for m in members:
            dest = out / m.name
            if m.kind in ("symlink", "hardlink"):
                links.append(m)
                continue
            if not _inside(out, dest.parent):
                raise FetchError(f"{archive}: refusing member {m.name!r}: its folder resolves outside")
            if m.kind == "dir":
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or dest.is_dir():
                raise FetchError(f"{archive}: refusing member {m.name!r}: it would replace a folder or link")
            src = handle.extractfile(m.ref) if fmt == "tar" else handle.open(m.ref)
            with src:
                _write_stream(src, dest, budget, archive, max_bytes)
        # links last: nothing is written after them, and each must resolve inside
        for m in links:
            dest = out / m.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not _inside(out, dest.parent) or dest.exists() or dest.is_symlink():
                raise FetchError(f"{archive}: refusing link {m.name!r}: clashes with another member")
            if m.kind == "hardlink":
                source = out / m.target
                if not source.is_file() or source.is_symlink() or not _inside(out, source):
                    raise FetchError(f"{archive}: refusing hard link {m.name!r} -> {m.target!r}")
                shutil.copyfile(source, dest, follow_symlinks=False)
            else:
                os.symlink(m.target, dest)
                if not _inside(out, dest):
                    raise FetchError(
                        f"{archive}: refusing symlink {m.name!r} -> {m.target!r}: resolves outside the folder"
                    )


@contextmanager
def _open(archive: Path, fmt: str):
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                yield zf, list(_zip_members(archive, zf))
        else:
            with tarfile.open(archive, "r:*") as tar:
                yield tar, list(_tar_members(archive, tar))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, FetchError):
            raise
        raise FetchError(f"{archive}: damaged or unreadable archive: {exc}") from exc


def extract_to(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    marker: tuple[str, str] | None = None,
) -> Path:
    """Extract into a temp folder beside ``dest``, then atomically put it in place of ``dest``.

    ``marker`` = (file name, text) is written into the folder before the swap.
    """
    dest = Path(dest).absolute()
    with staged_dir(dest, "extract") as tmp:
        safe_extract(archive, tmp, max_bytes=max_bytes)
        if marker:
            (tmp / marker[0]).write_text(marker[1])
    return dest


@contextmanager
def staged_dir(dest: Path, kind: str = "stage") -> Iterator[Path]:
    """Yield a temp folder beside ``dest``; on success it replaces ``dest``, on any error it is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.{kind}-"))
    try:
        yield tmp
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, dest: Path) -> None:
    """Put folder ``new`` at ``dest`` (same parent), replacing an old ``dest`` atomically enough:
    the old one is first renamed aside, then removed."""
    old = None
    if dest.is_symlink() or dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
        os.rmdir(old)
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        if old.is_symlink() or old.is_file():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
