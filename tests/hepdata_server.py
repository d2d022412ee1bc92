"""A real local HEPData look-alike for tests: loopback HTTP server with HEPData's endpoints.

    with HEPDataServer(tmp_path, pallets={"pallet.tar.gz": archive}) as srv:
        fetch_pallet(srv.doi("pallet.tar.gz"), dest, options=FetchOptions(
            hepdata_url=srv.url, doi_url=srv.doi_url, cache_dir=tmp_path / "cache"))

Endpoints (shaped after HEPData/hepdata ``records/views.py``):

* ``{doi_url}/10.17182/hepdata.<recid>.v<N>/r<M>`` -> 302 to ``/record/resource/<id>?landing_page=true``
* ``/record/resource/<id>?landing_page=true``: the file when ``Accept`` names its type
  (``application/x-tar`` for .tar.gz/.tgz/.tar, ``application/zip`` for .zip), an HTML page
  for browsers, otherwise 406 with a JSON body
* ``/record/resource/<id>?view=true``: the file, as an attachment
* ``/record/ins<inspire>?format=json[&version=N]`` and ``/record/<recid>?format=json``: the record
* ``/record/resources/<recid>/<version>``: ``{"submission_items": [{..., "resources": [...]}]}``

Fault injection (each for the next ``times`` matching requests): ``fail(status)``,
``reset()`` (headers + half the body, then a TCP reset), ``stall(seconds)``.
``requests`` logs every request as (path, headers).

:class:`ScriptedServer` serves hostile behaviour instead: routes are scripts that write raw bytes
(trickled headers or bodies, endless bodies, lying ``Content-Length``, redirect loops, garbage).
"""

from __future__ import annotations

import io
import json
import mimetypes
import socket
import struct
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "HEPDataServer",
    "ServedResource",
    "make_tar_gz",
    "make_zip",
    "DOI_PREFIX",
    "ScriptedServer",
    "ScriptHandler",
    "serve",
    "status",
    "redirect",
    "raw_reply",
    "endless",
    "trickle_body",
    "trickle_headers",
]

DOI_PREFIX = "10.17182/hepdata"


def make_tar_gz(out: Path, files: dict[str, Path | bytes]) -> Path:
    """Write a .tar.gz holding ``files`` (archive name -> source file or bytes)."""
    with tarfile.open(out, "w:gz") as tar:
        for name, src in files.items():
            if isinstance(src, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(src)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(src))
            else:
                tar.add(src, arcname=name)
    return out


def make_zip(out: Path, files: dict[str, Path | bytes]) -> Path:
    """Write a .zip holding ``files`` (archive name -> source file or bytes)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, src in files.items():
            if isinstance(src, bytes):
                zf.writestr(name, src)
            elif Path(src).is_dir():
                for path in sorted(Path(src).rglob("*")):
                    if path.is_file():
                        zf.write(path, f"{name}/{path.relative_to(src).as_posix()}")
            else:
                zf.write(src, name)
    return out


def _mimetype(filename: str) -> str:
    kind, _encoding = mimetypes.guess_type(filename)
    return kind or "application/octet-stream"


@dataclass
class ServedResource:
    """One resource file of the served record."""

    index: int  # the N of .../rN in its DOI
    id: int  # HEPData's resource id
    filename: str
    path: Path
    file_type: str = "HistFactory"
    description: str = ""


@dataclass
class _Fault:
    kind: str  # 'status' | 'reset' | 'stall'
    match: str
    remaining: int
    arg: float = 0


class HEPDataServer:
    """One HEPData record (recid, inspire id, version) with its resources, on 127.0.0.1."""

    def __init__(
        self,
        tmp_path: Path,
        pallets: dict[str, Path] | None = None,
        *,
        extra: dict[str, Path] | None = None,
        recid: int = 90607,
        inspire_id: int = 1755298,
        version: int = 1,
        first_id: int = 1408470,
    ):
        self.tmp_path = Path(tmp_path)
        self.recid, self.inspire_id, self.version = recid, inspire_id, version
        self.resources: list[ServedResource] = []
        for name, path in (pallets or {}).items():
            self._add(name, path, "HistFactory", first_id)
        for name, path in (extra or {}).items():
            self._add(name, path, "text", first_id)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _add(self, name: str, path: Path, file_type: str, first_id: int) -> None:
        index = len(self.resources) + 1
        self.resources.append(
            ServedResource(index, first_id + index, name, Path(path), file_type, f"{file_type} {name}")
        )

    # -- addresses ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def doi_url(self) -> str:
        return f"{self.url}/doi"

    def resource(self, filename: str) -> ServedResource:
        for res in self.resources:
            if res.filename == filename:
                return res
        raise KeyError(filename)

    def doi(self, filename: str) -> str:
        return f"{DOI_PREFIX}.{self.recid}.v{self.version}/r{self.resource(filename).index}"

    def resource_url(self, filename: str, query: str = "view=true") -> str:
        return f"{self.url}/record/resource/{self.resource(filename).id}?{query}"

    def count(self, substring: str) -> int:
        """How many requests so far had ``substring`` in their path (with query)."""
        with self._lock:
            return sum(substring in path for path, _ in self.requests)

    # -- faults ------------------------------------------------------------------------------
    def fail(self, status: int = 500, *, times: int = 1, match: str = "/record/resource/") -> None:
        with self._lock:
            self._faults.append(_Fault("status", match, times, status))

    def reset(self, *, times: int = 1, match: str = "/record/resource/") -> None:
        with self._lock:
            self._faults.append(_Fault("reset", match, times))

    def stall(self, seconds: float, *, times: int = 1, match: str = "/record/resource/") -> None:
        with self._lock:
            self._faults.append(_Fault("stall", match, times, seconds))

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.match in path:
                    fault.remaining -= 1
                    return fault
        return None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> HEPDataServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> HEPDataServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- JSON documents -------------------------------------------------------------------------
    def record_json(self) -> dict:
        return {
            "recid": self.recid,
            "version": self.version,
            "version_count": self.version,
            "record": {
                "inspire_id": str(self.inspire_id),
                "hepdata_doi": f"{DOI_PREFIX}.{self.recid}.v{self.version}",
                "title": "A test record",
            },
            "additional_resources": bool(self.resources),
            "data_tables": [],
        }

    def resources_json(self) -> dict:
        return {
            "submission_items": [
                {
                    "name": "Common Resources",
                    "type": "submission",
                    "version": self.version,
                    "id": self.recid,
                    "resources": [
                        {
                            "id": r.id,
                            "file_type": r.file_type,
                            "file_description": r.description,
                            "location": f"/record/resource/{r.id}?view=true",
                            "filename": r.filename,
                            "doi": f"{DOI_PREFIX}.{self.recid}.v{self.version}/r{r.index}",
                        }
                        for r in self.resources
                    ],
                }
            ]
        }


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up early (a refused body, a watchdog) is normal here: no traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_state: HEPDataServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    # -- helpers ----------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: object) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def _not_found(self, what: str) -> None:
        self._send(404, f"<html><body>404: {what} not found</body></html>".encode(), "text/html")

    def _send_file(self, res: ServedResource, fault: _Fault | None) -> None:
        body = res.path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", _mimetype(res.filename))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Disposition", f"attachment; filename={res.filename}")
        self.end_headers()
        if fault is not None and fault.kind == "reset":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST mid-body
            self.close_connection = True
            return
        self.wfile.write(body)

    # -- routing -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        state = self.server_state
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with state._lock:
            state.requests.append((self.path, dict(self.headers)))
        fault = state._take_fault(self.path)
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.arg)
            fault = None
        if fault is not None and fault.kind == "status":
            self._send(int(fault.arg), b"<html><body>injected failure</body></html>", "text/html")
            return
        segs = [s for s in parts.path.split("/") if s]
        if segs[:1] == ["doi"]:
            return self._doi("/".join(segs[1:]))
        if segs[:2] == ["record", "resource"] and len(segs) == 3 and segs[2].isdigit():
            return self._resource(int(segs[2]), query, fault)
        if segs[:2] == ["record", "resources"] and len(segs) == 4:
            if segs[2] == str(state.recid) and segs[3] == str(state.version):
                return self._json(200, state.resources_json())
            return self._not_found(f"resources of {segs[2]}/{segs[3]}")
        if segs[:1] == ["record"] and len(segs) == 2:
            ident = segs[1]
            ok = ident in (f"ins{state.inspire_id}", str(state.recid))
            if not ok or query.get("version", str(state.version)) != str(state.version):
                return self._not_found(f"record {ident}")
            if query.get("format") == "json":
                return self._json(200, state.record_json())
            return self._send(200, b"<html><body>record page</body></html>", "text/html")
        self._not_found(parts.path)

    def _doi(self, doi: str) -> None:
        state = self.server_state
        for res in state.resources:
            if doi.lower() == f"{DOI_PREFIX}.{state.recid}.v{state.version}/r{res.index}":
                location = f"{state.url}/record/resource/{res.id}?landing_page=true"
                return self._send(302, b"", "text/html", {"Location": location})
        self._not_found(f"DOI {doi}")

    def _resource(self, rid: int, query: dict[str, str], fault: _Fault | None) -> None:
        res = next((r for r in self.server_state.resources if r.id == rid), None)
        if res is None:
            return self._not_found(f"resource {rid}")
        if query.get("view") == "true":
            return self._send_file(res, fault)
        if query.get("landing_page") == "true":
            accepted = [
                a.split(";")[0].strip() for a in self.headers.get("Accept", "").split(",") if a.strip()
            ]
            mimetype = _mimetype(res.filename)
            if mimetype in accepted:
                return self._send_file(res, fault)
            if not accepted or "text/html" in accepted or "*/*" in accepted:
                return self._send(200, f"<html><body>{res.filename}</body></html>".encode(), "text/html")
            return self._json(
                406,
                {"message": f"Accept header {accepted} does not match the file type {mimetype}"},
            )
        location = f"/record/resource/{rid}?view=true"
        self._json(
            200,
            {
                "location": location,
                "type": res.file_type,
                "description": res.description,
                "file_contents": "Binary",
            },
        )


# -- hostile servers ---------------------------------------------------------------------------------
Script = Callable[["ScriptHandler"], None]


class ScriptedServer:
    """A loopback HTTP server whose routes are scripts writing raw bytes: hostile behaviour on demand.

        with ScriptedServer({"/slow": trickle_body(b"\\x1f\\x8b", per_second=1)}) as srv:
            fetch_pallet(f"{srv.url}/slow", dest, options=...)

    ``hits[path]`` counts requests, ``sent[path]`` the body bytes a script wrote.
    """

    def __init__(self, routes: dict[str, Script], *, tls: tuple[Path, Path] | None = None):
        self.routes = dict(routes)
        self.tls = tls  # (certificate, key) in PEM: serve https
        self.hits: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def start(self) -> ScriptedServer:
        handler = type("Handler", (ScriptHandler,), {"server_state": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        if self.tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ScriptHandler(BaseHTTPRequestHandler):
    """Request handler for :class:`ScriptedServer`; scripts call :meth:`raw` / :meth:`respond`."""

    server_state: ScriptedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        state = self.server_state
        path = urlsplit(self.path).path
        with state._lock:
            state.hits[path] = state.hits.get(path, 0) + 1
        script = state.routes.get(path)
        if script is None:
            return self.respond(404, b"<html>not found</html>", ctype="text/html")
        script(self)

    def raw(self, data: bytes, *, body: bool = True) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        if body:
            state = self.server_state
            path = urlsplit(self.path).path
            with state._lock:
                state.sent[path] = state.sent.get(path, 0) + len(data)

    def respond(
        self,
        status: int,
        body: bytes = b"",
        *,
        ctype: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
        length: int | None | bool = True,
    ) -> None:
        """A whole response; ``length`` True: the real Content-Length, an int: that one (a lie),
        False: none (the connection is closed after the body)."""
        lines = [f"HTTP/1.1 {status} X", f"Content-Type: {ctype}"]
        if length is True:
            lines.append(f"Content-Length: {len(body)}")
        elif length is not False and length is not None:
            lines.append(f"Content-Length: {length}")
        if length is False or (length is not True):
            lines.append("Connection: close")
            self.close_connection = True
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.raw(("\r\n".join(lines) + "\r\n\r\n").encode(), body=False)
        if body:
            self.raw(body)


def serve(body: bytes, *, ctype: str = "application/gzip", length: int | bool = True) -> Script:
    """Answer 200 with ``body``; ``length`` as in :meth:`ScriptHandler.respond`."""
    return lambda h: h.respond(200, body, ctype=ctype, length=length)


def status(code: int, *, headers: dict[str, str] | None = None, body: bytes = b"<html>x</html>") -> Script:
    return lambda h: h.respond(code, body, ctype="text/html", headers=headers)


def redirect(location: str | Callable[[ScriptHandler], str]) -> Script:
    def script(h: ScriptHandler) -> None:
        where = location(h) if callable(location) else location
        h.respond(302, b"", headers={"Location": where})

    return script


def raw_reply(data: bytes) -> Script:
    """Write ``data`` as the whole reply (status line included) and hang up."""

    def script(h: ScriptHandler) -> None:
        h.close_connection = True
        h.raw(data, body=False)

    return script


def endless(head: bytes, *, length: int | None = None, chunk: int = 1 << 16) -> Script:
    """200 with ``head`` then zeros until the client hangs up (``length`` announced if given)."""

    def script(h: ScriptHandler) -> None:
        h.respond(200, b"", length=length if length is not None else False)
        h.raw(head)
        zeros = bytes(chunk)
        while not h.server_state.stopping.is_set():
            h.raw(zeros)

    return script


def trickle_body(head: bytes, *, per_second: float = 1.0, length: int = 10_000) -> Script:
    """Headers at once (Content-Length ``length``), then the body ``head`` + zeros one byte at a time."""

    def script(h: ScriptHandler) -> None:
        h.respond(200, b"", length=length)
        data = head + bytes(max(0, length - len(head)))
        for i in range(len(data)):
            if h.server_state.stopping.wait(1.0 / per_second):
                return
            h.raw(data[i : i + 1])

    return script


def trickle_headers(*, per_second: float = 1.0) -> Script:
    """A status line, then one header byte per ``1/per_second`` s, forever."""

    def script(h: ScriptHandler) -> None:
        h.raw(b"HTTP/1.1 200 OK\r\nX-Slow: ", body=False)
        while not h.server_state.stopping.wait(1.0 / per_second):
            h.raw(b"a", body=False)

    return script
