"""Safe extraction of pallet archives (tar.gz, tgz, tar, tar.bz2, tar.xz, zip).

Pallets are JSON files in folders, so an archive may hold regular files and folders and nothing
else: symbolic links, hard links, devices, FIFOs and sparse files are refused outright, in tar and
zip alike (a zip's links hide in ``external_attr``). Every member is checked before anything is
written: absolute paths, ``..`` components, duplicate or clashing names, more than
``max_archive_members`` members and more than ``max_unpacked_bytes`` unpacked bytes are refused
(limits in :mod:`recastfit.limits`); tar metadata headers are capped so a tiny archive cannot make
the reader allocate gigabytes. Tar members are then written by the standard library with
``filter="data"`` as a second line; zip members are streamed with ``O_NOFOLLOW | O_EXCL`` and a
running byte count.

Extraction goes to a temporary folder beside the target (``.DEST.extract-*``) which replaces the
target only when complete. Each temporary folder is locked (``flock``) while in use, so the next
run can tell the leftovers of a killed run (unlocked) from a concurrent fetch (locked) and remove
only the former: :func:`clean_leftovers`.

>>> sniff_format(b"\\x1f\\x8b\\x08"), sniff_format(b"PK\\x03\\x04"), sniff_format(b"<html>")
('tar', 'zip', None)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recastfit.errors import FetchError
from recastfit.limits import LIMITS, limit

__all__ = [
    "MAGIC_BYTES",
    "archive_format",
    "sniff_format",
    "scan_archive",
    "safe_extract",
    "extract_to",
    "replace_dir",
    "staged_dir",
    "clean_leftovers",
    "DamagedArchive",
]

MAGIC_BYTES = 512  # enough of the head to recognise every supported format (ustar magic at 257)
_CHUNK = 1 << 20
_MAX_META_HEADER = 1 << 20  # a pax / GNU long-name header larger than this is hostile
_STAGE_KINDS = ("extract", "copy", "old")


class DamagedArchive(FetchError):
    """The file is not a readable archive (truncated, corrupt, or not an archive at all)."""


def sniff_format(head: bytes) -> str | None:
    """``'tar'``, ``'zip'`` or None from the first bytes of a file (up to :data:`MAGIC_BYTES`)."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    compressed = head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00"
    if compressed or head[257:262] == b"ustar":
        return "tar"
    return None


def archive_format(path: Path) -> str:
    """``'tar'`` or ``'zip'`` from the file's magic bytes; FetchError when it is neither."""
    with open(path, "rb") as fh:
        head = fh.read(MAGIC_BYTES)
    fmt = sniff_format(head)
    if fmt is None:
        raise DamagedArchive(f"{path}: not a tar or zip archive (first bytes {head[:8]!r})")
    return fmt


@dataclass(frozen=True)
class _Member:
    name: str  # normalised relative posix path
    is_dir: bool
    size: int
    ref: object  # TarInfo or ZipInfo


class _Budget:
    """Running checks over an archive's members: count, declared bytes, names."""

    def __init__(self, archive: Path, max_bytes: int, max_members: int):
        self.archive, self.max_bytes, self.max_members = archive, max_bytes, max_members
        self.count = 0
        self.bytes = 0
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def refuse(self, raw: str, why: str) -> FetchError:
        return FetchError(f"{self.archive}: refusing member {raw!r}: {why}")

    def member(self, raw: str, is_dir: bool, size: int, ref: object) -> _Member | None:
        self.count += 1
        if self.count > self.max_members:
            raise FetchError(
                f"{self.archive}: more than {self.max_members} members "
                f"(max_archive_members; raise {LIMITS['max_archive_members'].env} to allow it)"
            )
        name = _clean_name(self, raw)
        if name is None:
            return None
        if size < 0:
            raise self.refuse(raw, f"negative size {size}")
        self.bytes += size
        if self.bytes > self.max_bytes:
            raise FetchError(
                f"{self.archive}: unpacked size exceeds the limit of {self.max_bytes} bytes "
                f"(max_unpacked_bytes; raise {LIMITS['max_unpacked_bytes'].env} to allow it)"
            )
        parents = name.split("/")[:-1]
        for i in range(1, len(parents) + 1):
            if "/".join(parents[:i]) in self.files:
                raise self.refuse(raw, "a folder with the name of a file member")
        if is_dir:
            if name in self.files:
                raise self.refuse(raw, "a folder with the name of a file member")
            self.dirs.add(name)
        else:
            if name in self.files or name in self.dirs:
                raise self.refuse(raw, "its name appears twice")
            self.files.add(name)
        return _Member(name, is_dir, size, ref)


def _clean_name(budget: _Budget, raw: str) -> str | None:
    """The normalised relative name, or FetchError for absolute / escaping / odd names."""
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise budget.refuse(raw, "NUL in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise budget.refuse(raw, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise budget.refuse(raw, "'..' path component")
    return "/".join(parts) or None


class _CappedTarInfo(tarfile.TarInfo):
    """TarInfo whose pax / GNU long-name headers are capped before tarfile reads them into memory."""

    def _proc_member(self, tarfile_: tarfile.TarFile):  # noqa: ANN202 - tarfile's private hook
        meta = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)
        if self.type in meta + (tarfile.SOLARIS_XHDTYPE,) and self.size > _MAX_META_HEADER:
            raise FetchError(
                f"{getattr(tarfile_, 'name', 'archive')}: refusing a {self.size}-byte metadata header "
                f"(more than {_MAX_META_HEADER})"
            )
        return super()._proc_member(tarfile_)


def _tar_members(budget: _Budget, tar: tarfile.TarFile) -> Iterator[_Member]:
    for info in tar:
        if info.issym():
            raise budget.refuse(info.name, f"symbolic link (-> {info.linkname!r}); pallets never need links")
        if info.islnk():
            raise budget.refuse(info.name, f"hard link (-> {info.linkname!r}); pallets never need links")
        if info.issparse():
            raise budget.refuse(info.name, "sparse file")
        if not (info.isfile() or info.isdir()):
            raise budget.refuse(info.name, "device, FIFO or special file")
        member = budget.member(info.name, info.isdir(), 0 if info.isdir() else info.size, info)
        if member is not None:
            yield member


def _zip_entry_count(archive: Path) -> tuple[int, int]:
    """(entries, central directory bytes) from the end record, read before ZipFile parses it all."""
    with open(archive, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        tail_len = min(size, 22 + 65535 + 20)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or len(tail) - pos < 22:
            raise DamagedArchive(f"{archive}: damaged or unreadable archive: no zip end record")
        _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[pos : pos + 22])
        if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
            loc = pos - 20
            if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
                raise DamagedArchive(f"{archive}: damaged or unreadable archive: bad zip64 locator")
            (offset,) = struct.unpack("<Q", tail[loc + 8 : loc + 16])
            fh.seek(offset)
            rec = fh.read(56)
            if len(rec) < 56 or rec[:4] != b"PK\x06\x06":
                raise DamagedArchive(f"{archive}: damaged or unreadable archive: bad zip64 end record")
            entries, cd_size = struct.unpack("<QQ", rec[32:48])
    return int(entries), int(cd_size)


def _zip_members(budget: _Budget, zf: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        if fmt == stat.S_IFLNK:
            raise budget.refuse(info.filename, "symbolic link; pallets never need links")
        if fmt and fmt not in (stat.S_IFREG, stat.S_IFDIR):
            raise budget.refuse(info.filename, "device, FIFO or special file")
        if info.flag_bits & 0x1:
            raise budget.refuse(info.filename, "encrypted")
        member = budget.member(info.filename, info.is_dir(), 0 if info.is_dir() else info.file_size, info)
        if member is not None:
            yield member


@contextmanager
def _open(archive: Path, max_bytes: int | None, max_members: int | None) -> Iterator[tuple]:
    """Yield (format, handle, checked members); every failure is a FetchError naming the archive."""
    budget = _Budget(
        archive,
        int(max_bytes if max_bytes is not None else limit("max_unpacked_bytes")),
        int(max_members if max_members is not None else limit("max_archive_members")),
    )
    fmt = archive_format(archive)
    try:
        if fmt == "zip":
            entries, cd_size = _zip_entry_count(archive)
            if entries > budget.max_members or cd_size > 1024 * max(budget.max_members, 64):
                raise FetchError(
                    f"{archive}: {entries} members ({cd_size}-byte directory) exceed the limit of "
                    f"{budget.max_members} (max_archive_members; raise "
                    f"{LIMITS['max_archive_members'].env} to allow it)"
                )
            with zipfile.ZipFile(archive) as zf:
                yield fmt, zf, list(_zip_members(budget, zf))
        else:
            with tarfile.open(archive, "r:*", tarinfo=_CappedTarInfo) as tar:
                members = list(_tar_members(budget, tar))
                _check_tar_complete(archive, tar, members)
                yield fmt, tar, members
    except FetchError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as exc:
        raise DamagedArchive(f"{archive}: damaged or unreadable archive: {_short(exc)}") from None
    except NotImplementedError as exc:
        raise FetchError(f"{archive}: unsupported archive feature: {_short(exc)}") from None


def _check_tar_complete(archive: Path, tar: tarfile.TarFile, members: list[_Member]) -> None:
    """An uncompressed tar cut inside a member's data reads as complete: compare with the file size.

    (A compressed one cannot hide it: decompression fails at the missing end of the stream.)
    """
    if not members:
        raise DamagedArchive(f"{archive}: damaged or unreadable archive: no members")
    with open(archive, "rb") as fh:
        if fh.read(262)[257:262] != b"ustar":
            return
    last = max(members, key=lambda m: m.ref.offset_data)  # type: ignore[attr-defined]
    end = last.ref.offset_data + last.size  # type: ignore[attr-defined]
    if end > archive.stat().st_size:
        raise DamagedArchive(f"{archive}: damaged or unreadable archive: member {last.name!r} is truncated")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def scan_archive(archive: Path, *, max_bytes: int | None = None, max_members: int | None = None) -> list[str]:
    """Check every member of ``archive`` (reading it to the end) and return the member names.

    A FetchError names the archive and the reason: not an archive, damaged or truncated, or a
    member that :func:`safe_extract` would refuse.
    """
    with _open(Path(archive), max_bytes, max_members) as (_fmt, _handle, members):
        return [m.name for m in members]


def safe_extract(
    archive: Path, out: Path, *, max_bytes: int | None = None, max_members: int | None = None
) -> None:
    """Extract ``archive`` into the existing empty folder ``out`` after checking every member.

    ``max_bytes`` / ``max_members`` default to the limits ``max_unpacked_bytes`` /
    ``max_archive_members``.
    """
    archive, out = Path(archive), Path(out)
    with _open(archive, max_bytes, max_members) as (fmt, handle, members):
        try:
            if fmt == "tar":
                handle.extractall(out, members=[m.ref for m in members], filter="data")
            else:
                budget = [0, max(sum(m.size for m in members), 0)]
                for m in members:
                    _zip_write(archive, handle, m, out, budget)
        except FetchError:
            raise
        except tarfile.FilterError as exc:
            raise FetchError(f"{archive}: refusing member: {_short(exc)}") from None
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as exc:
            raise DamagedArchive(f"{archive}: damaged or unreadable archive: {_short(exc)}") from None
        except NotImplementedError as exc:
            raise FetchError(f"{archive}: unsupported archive feature: {_short(exc)}") from None


def _zip_write(archive: Path, zf: zipfile.ZipFile, m: _Member, out: Path, budget: list[int]) -> None:
    dest = out.joinpath(*m.name.split("/"))
    if m.is_dir:
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(dest, flags, 0o644)
    with os.fdopen(fd, "wb") as fh, zf.open(m.ref) as src:  # type: ignore[arg-type]
        while chunk := src.read(_CHUNK):
            budget[0] += len(chunk)
            if budget[0] > budget[1]:  # zipfile stops at the declared size; this is a second line
                raise FetchError(f"{archive}: member {m.name!r} is larger than its declared size")
            fh.write(chunk)


def extract_to(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int | None = None,
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


def _lock_dir(path: Path) -> int:
    """Open ``path`` and hold an exclusive flock on it (released when closed or the process dies)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@contextmanager
def staged_dir(dest: Path, kind: str = "extract") -> Iterator[Path]:
    """Yield a locked temp folder beside ``dest``; on success it replaces ``dest``, on error it goes.

    ``kind`` is ``extract`` or ``copy`` (it names the folder: ``.DEST.<kind>-XXXX``).
    """
    if kind not in _STAGE_KINDS:
        raise ValueError(f"staged_dir kind must be one of {_STAGE_KINDS}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(dest)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.{kind}-"))
    fd = _lock_dir(tmp)
    try:
        yield tmp
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def clean_leftovers(dest: Path) -> list[Path]:
    """Remove ``.DEST.extract-*`` / ``.copy-*`` / ``.old-*`` folders that no live process holds.

    A folder is in use while a fetch holds its flock; one left by a killed run is unlocked.
    Returns the removed paths.
    """
    dest = Path(dest)
    removed: list[Path] = []
    if not dest.parent.is_dir():
        return removed
    for kind in _STAGE_KINDS:
        for path in dest.parent.glob(f".{dest.name}.{kind}-*"):
            if path.is_symlink() or not path.is_dir():
                continue
            try:
                fd = _lock_dir(path)
            except OSError:
                continue  # locked: a concurrent fetch is using it
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(fd)
            removed.append(path)
    return removed


def replace_dir(new: Path, dest: Path) -> None:
    """Put folder ``new`` at ``dest`` (same parent), replacing an old ``dest`` atomically enough:
    the old one is first renamed aside (``.DEST.old-*``, locked), then removed."""
    old = None
    fd = None
    if dest.is_symlink() or dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
        os.rmdir(old)
        os.replace(dest, old)
        if old.is_dir() and not old.is_symlink():
            fd = _lock_dir(old)
    try:
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
    finally:
        if fd is not None:
            os.close(fd)
