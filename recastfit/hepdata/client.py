"""HTTP for HEPData: JSON look-ups and streaming downloads with retries and back-off.

Transient failures (connection errors, resets mid-body, timeouts, HTTP 5xx and 429) are
retried ``retries`` times with exponential back-off; a 404 or another 4xx fails at once with
an error naming the source and the URL. Downloads stream to a temporary file (never the
whole archive in memory), hashing as they go; a partial file never survives a failure.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests
import urllib3.exceptions

import recastfit
from recastfit.errors import FetchError

__all__ = ["HTTPClient", "Download", "NotAcceptable", "ARCHIVE_ACCEPT"]

log = logging.getLogger(__name__)

# what a pallet can be: tar.gz is served as application/x-tar by HEPData (mimetypes.guess_type)
ARCHIVE_ACCEPT = (
    "application/x-tar, application/gzip, application/x-gzip, application/zip, application/x-zip-compressed"
)
_CHUNK = 1 << 16
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    urllib3.exceptions.IncompleteRead,
    ConnectionError,
    TimeoutError,
)


class NotAcceptable(FetchError):
    """HTTP 406: the server cannot return the file in a type we accept (body kept as ``payload``)."""

    def __init__(self, message: str, url: str, payload: object = None):
        super().__init__(message)
        self.url, self.payload = url, payload


class _Retry(Exception):
    """A transient failure: try again after back-off."""


@dataclass(frozen=True)
class Download:
    """A finished download: a temp file with its digest, size and the name the server gave."""

    path: Path
    sha256: str
    size: int
    filename: str
    url: str
    content_type: str


class HTTPClient:
    """A small requests-based client; one instance per fetch."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        quiet: bool = False,
        what: str = "",
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.timeout, self.retries, self.backoff, self.quiet = timeout, retries, backoff, quiet
        self.what = what  # the user's SOURCE, for messages
        self._sleep = sleep
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"recastfit/{recastfit.__version__} (+pallet fetcher)"
        self.attempts = 0

    def close(self) -> None:
        self.session.close()

    # -- generic retry loop --------------------------------------------------------------------
    def _with_retries(self, url: str, action: Callable[[], object]) -> object:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            self.attempts += 1
            try:
                return action()
            except _Retry as exc:
                last = exc
            except _TRANSIENT as exc:
                last = exc
            if attempt < self.retries:
                delay = self.backoff * (2**attempt)
                log.warning(
                    "%s: %s; retrying in %.2g s (%d/%d)", url, _short(last), delay, attempt + 1, self.retries
                )
                self._sleep(delay)
        n = self.retries + 1
        raise FetchError(
            f"source {self.what!r}: {url} failed after {n} attempt{'s' if n > 1 else ''}: {_short(last)}"
        ) from last

    def _check_status(self, resp: requests.Response, url: str) -> None:
        code = resp.status_code
        if code < 400:
            return
        if code >= 500 or code == 429:
            raise _Retry(f"HTTP {code} {resp.reason}")
        body = _read_small(resp)
        if code == 406:
            payload: object = body
            try:
                payload = resp.json() if body else None
            except ValueError:
                pass
            msg = f"source {self.what!r}: {url} answered 406 Not Acceptable: {body}"
            raise NotAcceptable(msg, url, payload)
        if code == 404:
            raise FetchError(f"source {self.what!r}: not found (HTTP 404) at {url}")
        raise FetchError(f"source {self.what!r}: {url} answered HTTP {code} {resp.reason}: {body[:300]}")

    # -- JSON ----------------------------------------------------------------------------------
    def get_json(self, url: str, *, params: dict | None = None) -> object:
        """GET ``url`` expecting JSON; retried on transient failures."""

        def action() -> object:
            with self.session.get(
                url, params=params, timeout=self.timeout, headers={"Accept": "application/json"}
            ) as resp:
                self._check_status(resp, resp.url)
                try:
                    return resp.json()
                except ValueError as exc:
                    raise FetchError(
                        f"source {self.what!r}: {resp.url} did not return JSON "
                        f"(Content-Type {resp.headers.get('Content-Type')!r})"
                    ) from exc

        return self._with_retries(url, action)

    # -- streaming download -----------------------------------------------------------------
    def download(self, url: str, tmp_dir: Path, *, accept: str = ARCHIVE_ACCEPT) -> Download:
        """Stream ``url`` into a new file in ``tmp_dir``; the caller moves or removes it."""

        def action() -> Download:
            fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="download-", suffix=".part")
            ok = False
            try:
                with os.fdopen(fd, "wb") as out:
                    result = self._stream(url, out, Path(tmp), accept)
                ok = True
                return result
            finally:
                if not ok:
                    Path(tmp).unlink(missing_ok=True)

        return self._with_retries(url, action)

    def _stream(self, url: str, out, tmp: Path, accept: str) -> Download:
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as resp:
            self._check_status(resp, resp.url)
            expected = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length") else None
            filename = _filename(resp)
            progress = _Progress(filename, expected, quiet=self.quiet)
            digest, size = hashlib.sha256(), 0
            # raw bytes, no transparent gunzip: a .tar.gz must stay a .tar.gz
            for chunk in resp.raw.stream(_CHUNK, decode_content=False):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress.update(size)
            progress.done(size)
            if expected is not None and size != expected:
                raise _Retry(f"body truncated: got {size} of {expected} bytes")
            return Download(
                tmp, digest.hexdigest(), size, filename, resp.url, resp.headers.get("Content-Type", "")
            )


def _filename(resp: requests.Response) -> str:
    disp = resp.headers.get("Content-Disposition", "")
    m = re.search(r"filename\*=(?:UTF-8'')?([^;]+)", disp, re.I) or re.search(
        r'filename="?([^";]+)"?', disp, re.I
    )
    name = unquote(m.group(1).strip()) if m else unquote(urlsplit(resp.url).path.rsplit("/", 1)[-1])
    return os.path.basename(name.replace("\\", "/")) or "download"


def _read_small(resp: requests.Response, limit: int = 4096) -> str:
    try:
        return resp.raw.read(limit, decode_content=True).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - best effort, for an error message only
        return ""


def _short(exc: Exception | None) -> str:
    text = str(exc) if exc else "unknown error"
    return text if len(text) < 300 else text[:297] + "..."


class _Progress:
    """Byte progress on stderr: a rewritten line on a terminal, a few lines otherwise."""

    def __init__(self, name: str, total: int | None, *, quiet: bool):
        self.name, self.total, self.quiet = name, total, quiet
        self.tty = sys.stderr.isatty()
        self.next_mark = 0.25
        self.last = 0.0

    def update(self, size: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty and now - self.last > 0.2:
            self.last = now
            sys.stderr.write(f"\r{self._line(size)}")
            sys.stderr.flush()
        elif not self.tty and self.total and size / self.total >= self.next_mark and size < self.total:
            self.next_mark += 0.25
            sys.stderr.write(self._line(size) + "\n")

    def done(self, size: int) -> None:
        if not self.quiet:
            sys.stderr.write(("\r" if self.tty else "") + self._line(size) + " done\n")

    def _line(self, size: int) -> str:
        mib = size / 2**20
        if self.total:
            pct = 100 * size / self.total
            return f"fetching {self.name}: {mib:.1f} / {self.total / 2**20:.1f} MiB ({pct:.0f}%)"
        return f"fetching {self.name}: {mib:.1f} MiB"
