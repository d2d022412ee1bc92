"""HTTP for HEPData: JSON look-ups and streaming downloads, bounded in size, time and rate.

* Status retries (HTTP 429 and 5xx, with ``Retry-After`` capped), connection errors and timeouts
  before the body are retried by urllib3's :class:`~urllib3.util.Retry`, mounted on the session
  (:mod:`recastfit.hepdata.watchdog`).
* A body that breaks off (reset, fewer bytes than ``Content-Length``, or an archive that fails
  ``verify`` — e.g. truncated without a ``Content-Length``) is retried here, ``retries`` times with
  back-off; it never reaches the cache.
* Every download has an overall deadline and a minimum throughput (limits
  ``download_deadline_s`` and ``min_download_rate`` over ``min_rate_window_s``): a
  :class:`~recastfit.hepdata.watchdog.Watchdog` shuts the sockets down when either is missed, so
  even a server trickling one header byte a second ends in a named error. The body is capped at
  ``max_download_bytes``, JSON answers at ``max_api_bytes``.
* The archive format is checked from the first bytes: an HTML page or a 1.5 GB non-archive stops
  after the first chunk.
* Every failure is a :class:`~recastfit.errors.FetchError` naming the source and the URL, with
  secrets masked (:func:`~recastfit.hepdata.redact.redact_url`); a 404 or another 4xx fails at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import urllib3.exceptions

import recastfit
from recastfit.errors import FetchError
from recastfit.hepdata.extract import MAGIC_BYTES, DamagedArchive, sniff_format
from recastfit.hepdata.redact import redact_text, redact_url
from recastfit.hepdata.watchdog import Watchdog, watched_adapter
from recastfit.limits import LIMITS, limit
from recastfit.progress import Progress, format_bytes

__all__ = ["HTTPClient", "Download", "NotAcceptable", "ARCHIVE_ACCEPT", "RETRY_STATUS"]

log = logging.getLogger(__name__)

# what a pallet can be: tar.gz is served as application/x-tar by HEPData (mimetypes.guess_type)
ARCHIVE_ACCEPT = (
    "application/x-tar, application/gzip, application/x-gzip, application/zip, application/x-zip-compressed"
)
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 1 << 16
_MAX_REDIRECTS = 10
# a body that breaks off mid-way: worth another attempt
_BODY_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    urllib3.exceptions.IncompleteRead,
    http.client.HTTPException,
    OSError,
)


class NotAcceptable(FetchError):
    """HTTP 406: the server cannot return the file in a type we accept (body kept as ``payload``)."""

    def __init__(self, message: str, url: str, payload: object = None):
        super().__init__(message)
        self.url, self.payload = url, payload


class _Again(Exception):
    """A body that broke off or failed verification: try again after back-off."""


@dataclass(frozen=True)
class Download:
    """A finished download: a temp file with its digest, size and the name the server gave.

    The file stays locked (so :func:`clean_parts` in another process leaves it alone) until
    :meth:`release`; move it into place first.
    """

    path: Path
    sha256: str
    size: int
    filename: str
    url: str
    lock_fd: int | None = None

    def release(self) -> None:
        """Drop the lock on the temp file (closes its descriptor; safe to call twice)."""
        if self.lock_fd is not None:
            try:
                os.close(self.lock_fd)
            except OSError:
                pass


class HTTPClient:
    """A requests session with retries, a watchdog and caps; one instance per fetch."""

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
        self.what = redact_text(what)  # the user's SOURCE, for messages
        self._sleep = sleep
        self.watch = Watchdog()
        self.session = requests.Session()
        self.session.max_redirects = _MAX_REDIRECTS
        self.session.headers["User-Agent"] = f"recastfit/{recastfit.__version__} (+pallet fetcher)"
        adapter = watched_adapter(self.watch, retries=retries, backoff=backoff, status=RETRY_STATUS)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    # -- errors ---------------------------------------------------------------------------------
    def _error(self, url: str, message: str) -> FetchError:
        return FetchError(f"source {self.what!r}: {redact_url(url)} {redact_text(message)}")

    def _failure(self, url: str, exc: BaseException) -> FetchError:
        """A named error for any exception from requests/urllib3/sockets (the watchdog's reason first)."""
        if self.watch.tripped:
            return self._error(url, f"stopped: {self.watch.tripped}")
        if isinstance(exc, requests.TooManyRedirects):
            return self._error(url, f"redirected more than {_MAX_REDIRECTS} times (a redirect loop?)")
        if isinstance(exc, (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL)):
            return self._error(url, f"led to an unusable URL: {_short(exc)}")
        if isinstance(exc, requests.ConnectionError) and isinstance(
            exc.args[0] if exc.args else None, urllib3.exceptions.MaxRetryError
        ):
            n = self.retries + 1
            reason = getattr(exc.args[0], "reason", exc)
            return self._error(url, f"failed after {n} attempt{'s' * (n > 1)}: {_short(reason)}")
        return self._error(url, f"failed: {_short(exc)}")

    def _check_status(self, resp: requests.Response, url: str) -> None:
        code = resp.status_code
        if code < 400:
            return
        history = getattr(getattr(resp.raw, "retries", None), "history", ()) or ()
        n = 1 + len(history)
        if code in RETRY_STATUS:
            raise self._error(
                resp.url, f"failed after {n} attempt{'s' * (n > 1)}: HTTP {code} {resp.reason or ''}".rstrip()
            )
        body = _read_small(resp)
        if code == 406:
            payload: object = body
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                pass
            msg = f"source {self.what!r}: {redact_url(resp.url)} answered 406 Not Acceptable: {body}"
            raise NotAcceptable(redact_text(msg), resp.url, payload)
        if code == 404:
            raise FetchError(f"source {self.what!r}: not found (HTTP 404) at {redact_url(resp.url)}")
        raise self._error(resp.url, f"answered HTTP {code} {resp.reason or ''}: {body[:300]}")

    # -- one request under the watchdog ---------------------------------------------------------
    def _watched(self, url: str, action: Callable[[], Any], *, min_rate: bool = True) -> Any:
        """Run ``action`` (one or more attempts) under the overall deadline and minimum rate.

        ``min_rate`` False: the deadline alone (an API answer may take a while to be generated).
        """
        rate = limit("min_download_rate") if min_rate else 0.0
        self.watch.start(limit("download_deadline_s"), rate, limit("min_rate_window_s"))
        try:
            return action()
        except FetchError:
            if self.watch.tripped:
                raise self._error(url, f"stopped: {self.watch.tripped}") from None
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            raise self._failure(url, exc) from None
        except (OSError, ValueError, _Again) as exc:
            raise self._failure(url, exc) from None
        finally:
            self.watch.stop()

    def _get(self, url: str, **kw: Any) -> requests.Response:
        timeout = max(min(self.timeout, self.watch.remaining()), 0.01)
        return self.session.get(url, timeout=timeout, **kw)

    # -- JSON ----------------------------------------------------------------------------------
    def get_json(self, url: str, *, params: dict | None = None) -> object:
        """GET ``url`` expecting JSON (at most ``max_api_bytes``); retried when the body breaks off."""
        cap = int(limit("max_api_bytes"))

        def action() -> object:
            with self._get(url, params=params, stream=True, headers={"Accept": "application/json"}) as resp:
                self._check_status(resp, resp.url)
                body = bytearray()
                while chunk := resp.raw.read1(_CHUNK, decode_content=True):
                    body += chunk
                    self.watch.got(len(chunk))
                    if len(body) > cap:
                        raise self._error(
                            resp.url,
                            f"answered more than {cap} bytes of JSON (max_api_bytes; raise "
                            f"{LIMITS['max_api_bytes'].env} to allow it)",
                        )
                try:
                    return json.loads(bytes(body))
                except (ValueError, RecursionError):
                    raise self._error(
                        resp.url, f"did not return JSON (Content-Type {resp.headers.get('Content-Type')!r})"
                    ) from None

        return self._watched(url, lambda: self._body_retries(url, action), min_rate=False)

    # -- streaming download -----------------------------------------------------------------
    def download(
        self,
        url: str,
        tmp_dir: Path,
        *,
        accept: str = ARCHIVE_ACCEPT,
        verify: Callable[[Path], object] | None = None,
    ) -> Download:
        """Stream ``url`` into a new locked ``.part`` file in ``tmp_dir``; the caller moves or removes it.

        ``verify(path)`` (e.g. a full archive scan) runs on the finished file: a DamagedArchive from it
        counts as a broken body (retried, never returned), another FetchError (a refused member) is final.
        """

        return self._watched(
            url, lambda: self._body_retries(url, lambda: self._attempt(url, tmp_dir, accept, verify))
        )

    def _body_retries(self, url: str, attempt_once: Callable[[], Any]) -> Any:
        """Call ``attempt_once`` again (with back-off, within the deadline) when a body breaks off."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return attempt_once()
            except (_Again, *_BODY_ERRORS) as exc:
                if self.watch.tripped or not _retryable(exc):
                    raise
                last = exc
            if attempt < self.retries:
                delay = self.backoff * (2**attempt)
                if delay >= self.watch.remaining():
                    break
                log.warning(
                    "%s: %s; retrying in %.2g s (%d/%d)",
                    redact_url(url),
                    redact_text(_short(last)),
                    delay,
                    attempt + 1,
                    self.retries,
                )
                self._sleep(delay)
        n = self.retries + 1
        raise self._error(url, f"failed after {n} attempt{'s' * (n > 1)}: {_short(last)}")

    def _attempt(
        self, url: str, tmp_dir: Path, accept: str, verify: Callable[[Path], object] | None
    ) -> Download:
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="download-", suffix=".part")
        ok = False
        try:
            _lock_file(fd)  # held until the caller releases it: tells clean_parts this file is live
            with os.fdopen(os.dup(fd), "wb") as out:
                result = self._stream(url, out, Path(tmp), accept)
            if self.watch.tripped:
                raise _Again(self.watch.tripped)
            if verify is not None:
                try:
                    verify(Path(tmp))
                except DamagedArchive as exc:
                    why = str(exc).removeprefix(f"{tmp}: ")
                    raise _Again(f"the archive is truncated or damaged ({why}); not cached") from None
                except FetchError as exc:
                    why = str(exc).removeprefix(f"{tmp}: ")
                    raise self._error(result.url, f"served an archive that is refused: {why}") from None
            ok = True
            return dataclasses.replace(result, lock_fd=fd)
        finally:
            if not ok:
                Path(tmp).unlink(missing_ok=True)
                os.close(fd)

    def _stream(self, url: str, out: Any, tmp: Path, accept: str) -> Download:
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        cap = int(limit("max_download_bytes"))
        too_big = (
            f"is larger than {cap} bytes (max_download_bytes; raise {LIMITS['max_download_bytes'].env} "
            "to allow it)"
        )
        with self._get(url, headers=headers, stream=True) as resp:
            self._check_status(resp, resp.url)
            expected = _content_length(resp)
            if expected is not None and expected > cap:
                raise self._error(resp.url, f"announces {expected} bytes, which {too_big}")
            filename = _filename(resp)
            progress = Progress(expected, label=f"fetching {filename}", quiet=self.quiet, amount=format_bytes)
            digest, size = hashlib.sha256(), 0
            head, sniffed = b"", False
            # raw bytes, no transparent gunzip: a .tar.gz must stay a .tar.gz
            while True:
                chunk = resp.raw.read1(_CHUNK, decode_content=False)
                if not sniffed:
                    head += chunk[: MAGIC_BYTES - len(head)]
                    if len(head) >= MAGIC_BYTES or not chunk:
                        if sniff_format(head) is None:
                            ctype = resp.headers.get("Content-Type") or "unknown content"
                            raise self._error(
                                resp.url,
                                f"returned {ctype} starting {head[:16]!r}, not a tar or zip archive "
                                f"(stopped after {size + len(chunk)} bytes)",
                            )
                        sniffed = True
                if not chunk:
                    break
                size += len(chunk)
                self.watch.got(len(chunk))
                if size > cap:
                    raise self._error(resp.url, f"body {too_big}")
                out.write(chunk)
                digest.update(chunk)
                progress.update(len(chunk))
            progress.close()
            if expected is not None and size != expected:
                raise _Again(f"body truncated: got {size} of {expected} bytes")
            return Download(tmp, digest.hexdigest(), size, filename, resp.url)


def _retryable(exc: BaseException) -> bool:
    """A body that broke off (worth another attempt), not a final answer such as a bad redirect."""
    if isinstance(exc, _Again):
        return True
    if isinstance(exc, requests.ConnectionError) and isinstance(
        exc.args[0] if exc.args else None, urllib3.exceptions.MaxRetryError
    ):
        return False  # urllib3 already retried the connection
    if isinstance(
        exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    ):
        return True
    if isinstance(exc, requests.RequestException):
        return False  # redirects, schemes, URLs: asking again gives the same answer
    return isinstance(exc, _BODY_ERRORS)


def _lock_file(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def clean_parts(tmp_dir: Path) -> list[Path]:
    """Remove ``download-*.part`` files in ``tmp_dir`` that no live download holds (a killed run's)."""
    import fcntl

    removed: list[Path] = []
    if not Path(tmp_dir).is_dir():
        return removed
    for path in Path(tmp_dir).glob("download-*.part"):
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live download
        try:
            path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _content_length(resp: requests.Response) -> int | None:
    raw = resp.headers.get("Content-Length")
    if not raw:
        return None
    try:
        value = int(raw.split(",")[0].strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _filename(resp: requests.Response) -> str:
    disp = resp.headers.get("Content-Disposition", "")
    m = re.search(r"filename\*=(?:UTF-8'')?([^;]+)", disp, re.I) or re.search(
        r'filename="?([^";]+)"?', disp, re.I
    )
    name = unquote(m.group(1).strip()) if m else unquote(urlsplit(resp.url).path.rsplit("/", 1)[-1])
    name = os.path.basename(name.replace("\\", "/"))
    name = "".join(ch for ch in name if ch.isprintable())[:200]
    return name if name not in ("", ".", "..") else "download"


def _read_small(resp: requests.Response, limit_: int = 4096) -> str:
    try:
        return resp.raw.read(limit_, decode_content=True).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - best effort, for an error message only
        return ""


def _short(exc: BaseException | None) -> str:
    text = str(exc) if exc else "unknown error"
    return text if len(text) < 300 else text[:297] + "..."
