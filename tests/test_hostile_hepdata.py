"""Hostile inputs to fetching: each row ends in a named error within 10 s and 500 MB, markers untouched.

Every row is a real archive on disk or a real loopback HTTP server (:class:`tests.hepdata_server.
ScriptedServer`) and runs in a bounded child (:func:`tests.hostile.run_bounded`). The pallet goes to
``tmp/results/pallet`` (cache ``tmp/results/cache``, manifest ``tmp/results/pallet.json``); marker
files sit in ``tmp/outside`` (``secret/BkgOnly.json`` is what a link-escaping archive would read).
Every HTTP row's URL carries ``user:TOPSECRET@`` and ``?token=TOPSECRET``: the secret must appear in
no message, no output and no file written.
"""

from __future__ import annotations

import io
import os
import re
import socket
import stat
import struct
import tarfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recastfit.cli import main
from recastfit.hepdata import FetchOptions, fetch_pallet
from recastfit.manifest import write_manifest
from tests.hepdata_server import (
    ScriptedServer,
    endless,
    raw_reply,
    redirect,
    serve,
    status,
    trickle_body,
    trickle_headers,
)
from tests.hostile import (
    MEMORY,
    SECRET_WORKSPACE,
    TIMEOUT,
    Outcome,
    check_markers,
    planted_markers,
    run_bounded,
)

SECRET = "TOPSECRET"
WORKSPACE = SECRET_WORKSPACE.replace("SECRET", "OK").encode()
GZ = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # a gzip header: passes the magic check


# -- archive builders ---------------------------------------------------------------------------------
def _file(name: str, data: bytes = WORKSPACE) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def zip_bytes(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def chain_tar() -> bytes:
    """Issue 10: ``c -> a/b/../..`` stored before ``a/b -> ..``; BkgOnly.json through the chain."""
    return tar_bytes(
        [
            _link("c", "a/b/../.."),
            _link("a/b", ".."),
            _link("BkgOnly.json", "c/../outside/secret/BkgOnly.json"),
        ]
    )


def bkg_link_tar() -> bytes:
    """Issue 10: ``BkgOnly.json -> a/b/../../../secret/BkgOnly.json`` (with a/b a real folder)."""
    return tar_bytes(
        [_file("a/b/keep.txt", b"x"), _link("BkgOnly.json", "a/b/../../../outside/secret/BkgOnly.json")]
    )


def truncated_tar_gz() -> bytes:
    whole = tar_bytes([_file("BkgOnly.json", os.urandom(200_000))])
    return whole[: len(whole) // 2]


def declared_tar(size: int) -> bytes:
    """One member header declaring ``size`` bytes (and no data): a few hundred bytes gzipped."""
    info = tarfile.TarInfo("BkgOnly.json")
    info.size = size
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(info)
    return buf.getvalue()


def pax_bomb() -> bytes:
    """A 4 MB pax header (tarfile would read it whole into memory) that gzips to a few kB."""
    info = tarfile.TarInfo("BkgOnly.json")
    info.pax_headers = {"comment": "a" * (4 << 20)}
    return tar_bytes([(info, WORKSPACE)])


def zip_with_entry_count(count: int) -> bytes:
    data = bytearray(zip_bytes([("BkgOnly.json", WORKSPACE, None)]))
    pos = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, pos + 8, count, count)
    return bytes(data)


# -- the box each row runs in ----------------------------------------------------------------------
@dataclass
class Box:
    tmp: Path
    srv: ScriptedServer

    @property
    def results(self) -> Path:
        return self.tmp / "results"

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def route(self, path: str, script: Callable) -> str:
        """Serve ``script`` at ``path``; the URL returned carries secrets that must never show."""
        self.srv.routes[path] = script
        host = self.srv.url.removeprefix("http://")
        return f"http://user:{SECRET}@{host}{path}?token={SECRET}&v=1"


@dataclass
class Row:
    id: str
    source: Callable[[Box], str]
    match: str
    env: dict[str, str] = field(default_factory=dict)
    cli: bool = False
    check: Callable[[Box, Outcome], None] | None = None


def _folder_with_link(box: Box, target: str) -> str:
    folder = box.tmp / "in" / "pallet"
    folder.mkdir(parents=True)
    (folder / "README").write_text("x")
    os.symlink(target, folder / "BkgOnly.json")
    return str(folder)


def _fifo(box: Box) -> str:
    path = box.tmp / "in" / "p.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return str(path)


def _closed_port_url(box: Box) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://user:{SECRET}@127.0.0.1:{port}/p.tar.gz?token={SECRET}"


def _sent_little(path: str, most: int = 16 << 20) -> Callable[[Box, Outcome], None]:
    """The client stopped early: the server got at most ``most`` bytes out (socket buffers included)
    and, where the message says how much was read, that is under 1 MiB."""

    def check(box: Box, out: Outcome) -> None:
        assert box.srv.sent.get(path, 0) < most, f"{box.srv.sent.get(path)} bytes sent before stopping"
        m = re.search(r"stopped after (\d+) bytes", out.message)
        assert m is None or int(m.group(1)) < 1 << 20, out.message

    return check


def _nothing_cached(box: Box, out: Outcome) -> None:
    blobs = box.results / "cache" / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


def _on(box: Box, routes: dict[str, Callable], source: str) -> str:
    """Serve ``routes`` (HEPData-API paths) and return ``source`` (resolved against the server)."""
    box.srv.routes.update(routes)
    return source


def _json(obj: str) -> Callable:
    return serve(obj.encode(), ctype="application/json")


ARCHIVE = "application/gzip"
ROWS = [
    # -- archives: links, escapes, specials (CLI, file://, HTTP, folder) ---------------------------
    Row("chain-cli", lambda b: str(b.file("c.tar.gz", chain_tar())), "symbolic link", cli=True),
    Row("chain-file-url", lambda b: b.file("c.tar.gz", chain_tar()).as_uri(), "symbolic link"),
    Row("chain-http", lambda b: b.route("/c.tar.gz", serve(chain_tar())), "symbolic link"),
    Row("bkg-link-cli", lambda b: str(b.file("l.tar.gz", bkg_link_tar())), "symbolic link", cli=True),
    Row("bkg-link-file-url", lambda b: b.file("l.tar.gz", bkg_link_tar()).as_uri(), "symbolic link"),
    Row(
        "folder-link-escape",
        lambda b: _folder_with_link(b, "../../outside/secret/BkgOnly.json"),
        "resolves outside the folder",
    ),
    Row(
        "folder-link-escape-cli",
        lambda b: _folder_with_link(b, str(b.tmp / "outside" / "secret" / "BkgOnly.json")),
        "resolves outside the folder",
        cli=True,
    ),
    Row(
        "folder-dir-link",
        lambda b: _folder_with_link(b, str(b.tmp / "outside")),
        "resolves outside the folder",
    ),
    Row(
        "zip-symlink-http",
        lambda b: b.route(
            "/z.zip",
            serve(
                zip_bytes([("BkgOnly.json", b"../../outside/secret/BkgOnly.json", stat.S_IFLNK | 0o777)]),
                ctype="application/zip",
            ),
        ),
        "symbolic link",
    ),
    Row(
        "tar-hardlink",
        lambda b: str(b.file("h.tar.gz", tar_bytes([_link("BkgOnly.json", "/etc/passwd", tarfile.LNKTYPE)]))),
        "hard link",
    ),
    Row(
        "tar-dotdot",
        lambda b: str(b.file("d.tar.gz", tar_bytes([_file("../outside/evil.json")]))),
        "'..' path component",
    ),
    Row(
        "tar-absolute",
        lambda b: str(b.file("a.tar.gz", tar_bytes([_file(str(b.tmp / "outside" / "evil.json"))]))),
        "absolute path",
    ),
    Row(
        "tar-device",
        lambda b: str(b.file("v.tar.gz", tar_bytes([_special("dev", tarfile.CHRTYPE)]))),
        "device, FIFO",
    ),
    Row(
        "zip-fifo",
        lambda b: str(b.file("f.zip", zip_bytes([("fifo", b"", stat.S_IFIFO | 0o644)]))),
        "device, FIFO",
    ),
    Row(
        "tar-clash",
        lambda b: str(b.file("k.tar", tar_bytes([_file("a"), _file("a/b")], "w"))),
        "name of a file",
    ),
    # -- archives: size, count and header bombs ----------------------------------------------------
    Row(
        "tar-declares-3GiB",
        lambda b: str(b.file("s.tar.gz", declared_tar(3 << 30))),
        "unpacked size exceeds",
    ),
    Row(
        "zip-bomb",
        lambda b: b.route("/bomb.zip", serve(zip_bytes([("zeros", bytes(20 << 20), None)]), ctype=ARCHIVE)),
        "unpacked size exceeds",
        env={"RECASTFIT_MAX_UNPACKED_BYTES": "1e6"},
    ),
    Row(
        "tar-many-members",
        lambda b: str(b.file("m.tar.gz", tar_bytes([_file(f"f{i}", b"") for i in range(300)]))),
        "more than 100 members",
        env={"RECASTFIT_MAX_ARCHIVE_MEMBERS": "100"},
    ),
    Row(
        "zip-claims-60000-entries",
        lambda b: str(b.file("e.zip", zip_with_entry_count(60000))),
        "60000 members",
        env={"RECASTFIT_MAX_ARCHIVE_MEMBERS": "1000"},
    ),
    Row(
        "tar-pax-header-bomb",
        lambda b: str(b.file("p.tar.gz", pax_bomb())),
        "metadata header",
    ),
    Row("not-an-archive-local", lambda b: str(b.file("p.tar.gz", b"<html>hi</html>")), "not a tar or zip"),
    Row("local-fifo", lambda b: _fifo(b), "neither a regular file nor a folder"),
    # -- HTTP bodies -----------------------------------------------------------------------------
    Row("html-page", lambda b: b.route("/h", serve(b"<html>" * 200, ctype="text/html")), "not a tar or zip"),
    Row(
        "1.5GB-non-archive",
        lambda b: b.route("/big", endless(b"<html>", length=1_500_000_000)),
        "not a tar or zip",
        check=_sent_little("/big"),
    ),
    Row(
        "announces-3GB",
        lambda b: b.route("/huge", endless(GZ, length=3_000_000_000)),
        "announces 3000000000 bytes",
        check=_sent_little("/huge"),
    ),
    Row(
        "endless-archive",
        lambda b: b.route("/endless", endless(GZ)),
        "larger than 1000000 bytes",
        env={"RECASTFIT_MAX_DOWNLOAD_BYTES": "1e6"},
        check=_sent_little("/endless", 8 << 20),
    ),
    Row(
        "truncated-no-length",
        lambda b: b.route("/t.tar.gz", serve(truncated_tar_gz(), length=False)),
        "truncated or damaged",
        check=_nothing_cached,
    ),
    Row(
        "shorter-than-length",
        lambda b: b.route("/s.tar.gz", serve(truncated_tar_gz(), length=400_000)),
        "failed after 3 attempts",
        check=_nothing_cached,
    ),
    Row(
        "trickle-body-1Bps",
        lambda b: b.route("/slow", trickle_body(GZ)),
        "not finished within 2 s",
        env={"RECASTFIT_DOWNLOAD_DEADLINE": "2"},
    ),
    Row(
        "trickle-headers-1Bps",
        lambda b: b.route("/slowhead", trickle_headers()),
        "not finished within 2 s",
        env={"RECASTFIT_DOWNLOAD_DEADLINE": "2"},
    ),
    Row(
        "below-min-rate",
        lambda b: b.route("/crawl", trickle_body(GZ, per_second=20)),
        "slower than 1000 bytes/s",
        env={"RECASTFIT_MIN_DOWNLOAD_RATE": "1000", "RECASTFIT_MIN_RATE_WINDOW": "1.5"},
    ),
    # -- HTTP status, redirects, protocol ----------------------------------------------------------
    Row("redirect-loop", lambda b: b.route("/loop", redirect("/loop")), "redirected more than 10 times"),
    Row("redirect-to-file", lambda b: b.route("/rf", redirect("file:///etc/passwd")), "unusable URL"),
    Row(
        "503-retry-after-1e5",
        lambda b: b.route("/busy", status(503, headers={"Retry-After": "100000"})),
        "failed after 3 attempts: HTTP 503",
    ),
    Row("403", lambda b: b.route("/forbidden", status(403)), "HTTP 403"),
    Row("404-with-secrets", lambda b: b.route("/x", status(404)), "not found (HTTP 404)"),
    Row("garbage-status-line", lambda b: b.route("/g", raw_reply(b"HELLO WORLD\r\n\r\n")), "failed"),
    Row(
        "100kB-header-line",
        lambda b: b.route("/hl", raw_reply(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100_000 + b"\r\n\r\n")),
        "failed",
    ),
    Row("connection-refused", _closed_port_url, "failed after 3 attempts"),
    Row(
        "doi-lands-on-html",
        lambda b: (
            b.srv.routes.update({"/doi/10.17182/hepdata.1.v1/r1": serve(b"<html/>", ctype="text/html")}),
            "10.17182/hepdata.1.v1/r1",
        )[1],
        "not a tar or zip",
    ),
    # -- the HEPData API answering nonsense -------------------------------------------------------
    Row(
        "api-endless-json",
        lambda b: (b.srv.routes.update({"/record/ins1": endless(b"[")}), "ins1")[1],
        "more than 1000000 bytes of JSON",
        env={"RECASTFIT_MAX_API_BYTES": "1e6"},
    ),
    Row(
        "api-trickle-json",
        lambda b: _on(b, {"/record/ins6": trickle_body(b"{", length=5000)}, "ins6"),
        "not finished within 2 s",
        env={"RECASTFIT_DOWNLOAD_DEADLINE": "2"},
    ),
    Row(
        "api-deep-json",
        lambda b: (b.srv.routes.update({"/record/ins2": _json("[" * 100_000 + "]" * 100_000)}), "ins2")[1],
        "did not return JSON",
    ),
    Row(
        "api-recid-not-int",
        lambda b: (b.srv.routes.update({"/record/ins3": _json('{"recid": "1e999"}')}), "ins3")[1],
        "key 'recid': expected an integer",
    ),
    Row(
        "api-listing-not-list",
        lambda b: (
            b.srv.routes.update(
                {
                    "/record/ins4": _json('{"recid": 7, "version": 1}'),
                    "/record/resources/7/1": _json('{"submission_items": "x"}'),
                }
            ),
            "ins4",
        )[1],
        "'submission_items' list",
    ),
    Row(
        "api-location-file-url",
        lambda b: (
            b.srv.routes.update(
                {
                    "/record/ins5": _json('{"recid": 8, "version": 1}'),
                    "/record/resources/8/1": _json(
                        '{"submission_items": [{"resources": [{"id": 1, "file_type": "HistFactory", '
                        '"filename": "p.tar.gz", "location": "file:///etc/passwd"}]}]}'
                    ),
                }
            ),
            "ins5",
        )[1],
        "refusing resource location",
    ),
]


def test_harness_reports_named_errors_and_bounds(tmp_path):
    """The harness itself: the error's name and message, a timeout kill, a memory kill, output capture."""
    from recastfit.errors import FetchError

    def boom():
        print("hello from the child")
        raise FetchError("no such pallet")

    out = run_bounded(boom)
    out.expect("FetchError", "no such pallet")
    assert out.recastfit and "hello from the child" in out.output and out.seconds < 5, out

    out = run_bounded(lambda: time.sleep(30), seconds=0.5)
    assert out.error == TIMEOUT and 0.5 <= out.seconds < 5 and not out.bounded, out

    def hog():
        blocks = []
        while True:
            blocks.append(bytearray(16 << 20))
            for i in range(0, len(blocks[-1]), 4096):
                blocks[-1][i] = 1

    out = run_bounded(hog, max_mb=150)
    assert out.error == MEMORY and out.peak_mb > 150, out

    def spike():  # up and down faster than a poll
        block = bytearray(200 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return len(block)

    out = run_bounded(spike, max_mb=100)  # killed by a poll, or caught by the child's own peak
    assert out.error == MEMORY and out.peak_mb > 100, out

    assert run_bounded(lambda: 41 + 1).result == "42"

    # memory is counted above what the child inherits at fork
    ballast = bytearray(300 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    out = run_bounded(lambda: len(ballast), max_mb=100)
    assert out.error is None and out.peak_mb < 50 and out.rss_mb > 300, out
    ballast.clear()

    markers = planted_markers(tmp_path)
    check_markers(markers)
    markers.secret.write_text("{}")
    with pytest.raises(AssertionError, match="changed="):
        check_markers(markers)


@pytest.fixture
def box(tmp_path):
    with ScriptedServer({}) as srv:
        yield Box(tmp_path, srv)


def _fetch(box: Box, row: Row, source: str) -> Callable[[], object]:
    dest, cache, manifest = box.results / "pallet", box.results / "cache", box.results / "pallet.json"

    def go() -> object:
        os.environ.update(row.env)
        if row.cli:
            argv = [
                "fetch",
                source,
                "--dest",
                str(dest),
                "--manifest",
                str(manifest),
                "--cache-dir",
                str(cache),
            ]
            code = main([*argv, "--hepdata-url", box.srv.url, "--retries", "2", "--timeout", "3"])
            if code:
                raise SystemExit(code)
            return code
        options = FetchOptions(
            hepdata_url=box.srv.url,
            doi_url=f"{box.srv.url}/doi",
            cache_dir=cache,
            quiet=True,
            backoff=0.01,
            retries=2,
            timeout=3.0,
        )
        folder = fetch_pallet(source, dest, options=options)
        return write_manifest(manifest, source, folder, None)

    return go


def _leftovers(root: Path) -> list[str]:
    odd = (".part", ".extract-", ".copy-", ".old-")
    return [str(p) for p in root.rglob("*") if any(s in p.name for s in odd)] if root.exists() else []


def _secret_anywhere(root: Path) -> list[str]:
    if not root.exists():
        return []
    return [str(p) for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_fetch(box, row):
    box.results.mkdir()
    markers = planted_markers(box.tmp)
    source = row.source(box)
    out = run_bounded(_fetch(box, row, source), seconds=10, max_mb=500)
    assert out.error not in (TIMEOUT, MEMORY), out
    if row.cli:
        assert (out.error, out.exit_code) == ("SystemExit", 2), out
        assert "recastfit fetch: error: " in out.output and row.match in out.output, out.output
        assert "Traceback" not in out.output, out.output
    else:  # FetchError or a subclass (e.g. DamagedArchive): a RecastfitError, printed without traceback
        assert out.recastfit and row.match in out.message, out
    assert out.seconds < 10 and out.peak_mb < 500, out
    check_markers(markers)
    assert not (box.results / "pallet").exists()
    assert not (box.results / "pallet.json").exists()
    assert _leftovers(box.results) == []
    assert SECRET not in out.message and SECRET not in out.output, out
    assert _secret_anywhere(box.results) == []
    if row.check is not None:
        row.check(box, out)


def test_table_size():
    assert len(ROWS) >= 25 and len({r.id for r in ROWS}) == len(ROWS)
