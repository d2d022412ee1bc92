"""A watchdog for HTTP requests: overall deadline, minimum throughput, and urllib3 retries that stop
when it trips.

Every socket a :class:`Watchdog`'s connection pools create is registered the moment it exists
(before any TLS handshake), so shutting them down ends any blocked read: a server trickling one
header byte a second, a stalled handshake, a body that crawls. :func:`watched_adapter` gives the
requests adapter to mount: urllib3's :class:`~urllib3.util.Retry` for status codes, connection
errors and timeouts, with ``Retry-After`` capped and no more waiting once the watchdog has tripped.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool
from urllib3.util import Retry

from recastfit.limits import LIMITS

__all__ = ["Watchdog", "watched_adapter"]


class _CappedRetry(Retry):
    """urllib3 Retry whose ``Retry-After`` wait is capped at ``backoff_max`` (a server can't park us)."""

    watch: Watchdog | None = None  # set on a per-client subclass: a tripped watchdog ends the retries

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.backoff_max)

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or bool(self.watch is not None and self.watch.tripped)

    def sleep(self, response: Any = None) -> None:
        if self.watch is None or not self.watch.tripped:
            super().sleep(response)


class Watchdog:
    """Watchdog for one request at a time: shuts its sockets down on a missed deadline or rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: list[_Watched] = []
        self.tripped: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0

    def add(self, sock: socket.socket) -> None:
        watched = _Watched.of(sock)
        with self._lock:
            self._socks.append(watched)
            tripped = self.tripped
        if tripped:
            watched.shutdown()

    def got(self, n: int) -> None:
        self.received += n

    def trip(self, reason: str) -> None:
        with self._lock:
            if self.tripped is None:
                self.tripped = reason
            socks = list(self._socks)
        for watched in socks:
            watched.shutdown()

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    def start(self, deadline: float, min_rate: float, window: float) -> None:
        self.tripped, self.received = None, 0
        self._deadline = time.monotonic() + deadline
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(deadline, min_rate, window), daemon=True, name="recastfit-fetch-watch"
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._socks.clear()

    def _run(self, deadline: float, min_rate: float, window: float) -> None:
        t0 = time.monotonic()
        samples: collections.deque[tuple[float, int]] = collections.deque([(t0, 0)])
        tick = min(0.2, window / 10, deadline / 10)
        while not self._stop.wait(tick):
            now = time.monotonic()
            if now - t0 > deadline:
                return self.trip(
                    f"not finished within {deadline:g} s (download_deadline_s; raise "
                    f"{LIMITS['download_deadline_s'].env} to allow more)"
                )
            samples.append((now, self.received))
            while len(samples) > 1 and samples[1][0] <= now - window:
                samples.popleft()
            t_old, b_old = samples[0]
            if min_rate > 0 and (
                now - t0 >= window
                and t_old <= now - window + tick
                and self.received - b_old < min_rate * window
            ):
                rate = (self.received - b_old) / max(now - t_old, 1e-9)
                return self.trip(
                    f"slower than {min_rate:g} bytes/s over {window:g} s ({rate:.0f} bytes/s; "
                    f"min_download_rate: lower {LIMITS['min_download_rate'].env} to allow it)"
                )
        return None


@dataclass(frozen=True)
class _Watched:
    """A socket as first created, with its descriptor and addresses.

    For https, urllib3 wraps the socket in an SSLSocket that takes over the descriptor (the
    original object is detached, ``fileno() == -1``); the descriptor number and the address pair
    still identify the connection, so a stalled TLS handshake or read can be shut down too.
    """

    sock: socket.socket
    fd: int
    ends: tuple[object, object]

    @classmethod
    def of(cls, sock: socket.socket) -> _Watched:
        try:
            ends: tuple[object, object] = (sock.getsockname(), sock.getpeername())
        except OSError:
            ends = (None, None)
        return cls(sock, sock.fileno(), ends)

    def shutdown(self) -> None:
        if self.sock.fileno() != -1:
            _shutdown(self.sock)
            return
        try:
            same = socket.socket(fileno=self.fd)  # no dup: the very connection, checked below
        except OSError:
            return
        try:
            if (same.getsockname(), same.getpeername()) == self.ends:
                _shutdown(same)
        except OSError:
            pass
        finally:
            same.detach()  # the descriptor still belongs to the SSLSocket


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watched_pools(watch: Watchdog) -> dict[str, type]:
    """Connection-pool classes whose every new socket is registered with ``watch``."""

    # named like urllib3's own classes: their names appear in urllib3's error messages
    class HTTPConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            watch.add(sock)
            return sock

    class HTTPSConnection(urllib3.connection.HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            watch.add(sock)
            return sock

    class HTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
        ConnectionCls = HTTPConnection

    class HTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
        ConnectionCls = HTTPSConnection

    return {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, watch: Watchdog, retry: Retry):
        self._pools = _watched_pools(watch)
        super().__init__(max_retries=retry)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = self._pools
        return manager


def watched_adapter(
    watch: Watchdog, *, retries: int, backoff: float, status: Collection[int]
) -> requests.adapters.HTTPAdapter:
    """A requests adapter whose sockets ``watch`` guards and whose Retry ends when it trips.

    ``retries`` attempts after the first for connection errors, read timeouts before the body and
    the HTTP ``status`` codes (GET only, waiting about ``backoff`` * 2**k s, ``Retry-After`` capped
    at ``max(8 * backoff, 1)`` s); redirects are left to requests (``Session.max_redirects``).
    """
    retry_cls = type("Retry", (_CappedRetry,), {"watch": watch})
    retry = retry_cls(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=False,
        status_forcelist=frozenset(status),
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff,
        backoff_max=max(backoff * 8, 1.0),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    return _WatchedAdapter(watch, retry)
