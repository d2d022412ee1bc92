"""A compute child process run under a time and memory budget enforced from outside it.

A wedged XLA call or a runaway allocation cannot be interrupted from inside the Python
process that runs it, so every fit runs in a child process that a :class:`Supervisor` in
the parent watches: the parent sends ``(fn, args, kwargs)`` over a socket pair, polls for
the answer, reads the child's resident memory from ``/proc``, and kills the child
(``SIGKILL``) when the call's deadline passes or its memory exceeds the cap, raising
:class:`BudgetExceeded`. The next call starts a fresh child. The child is our own process
(same user, same interpreter), so the socket carries pickles; nothing from a remote
machine is ever unpickled here.

This module imports only the standard library (a fresh child must be able to set thread
variables before numpy loads).
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["BudgetExceeded", "Supervisor", "TaskError", "WorkerLost", "child_main", "rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class BudgetExceeded(RuntimeError):
    """The child ran past its time budget or above its memory cap and was killed.

    >>> str(BudgetExceeded("timeout after 3 s"))
    'timeout after 3 s'
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class WorkerLost(RuntimeError):
    """The child process exited (crash, ``os._exit``, killed by someone else) during a call."""


class TaskError(RuntimeError):
    """The called function raised in the child; the message is its type, text and location."""


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (0 if it is gone or unreadable).

    >>> rss_bytes(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    try:  # not Linux: psutil when available
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # noqa: BLE001 - no way to measure: the time budget still applies
        return 0


SetupCall = tuple[Callable[..., Any], tuple]


class Supervisor:
    """One persistent child process; :meth:`call` runs a function in it under a budget.

    ``env`` is added to the child's environment at start (thread pinning for BLAS/XLA),
    ``setup`` calls run after each (re)start, before the first call (e.g. caching the
    background). ``memo`` is a set the owner may use to remember what the current child
    holds; it is emptied whenever a new child starts.
    """

    def __init__(
        self,
        *,
        rss_cap: int,
        env: dict[str, str] | None = None,
        setup: Sequence[SetupCall] = (),
        startup_s: float = 120.0,
        poll_s: float = 0.05,
    ) -> None:
        self.rss_cap = int(rss_cap)
        self.env = dict(env or {})
        self.setup = list(setup)
        self.startup_s = startup_s
        self.poll_s = poll_s
        self.memo: set[str] = set()
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
        code = (
            "import sys, json; sys.path[:0] = json.loads(sys.argv[2]); "
            "from recastfit.backends.supervisor import child_main; child_main(int(sys.argv[1]))"
        )
        fd = child_sock.fileno()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, str(fd), json.dumps(paths)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            close_fds=True,
        )
        child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self.memo = set()
        self.starts += 1
        for fn, args in self.setup:
            self._exchange(fn, args, {}, self.startup_s, None, self.rss_cap)

    def reset(self, setup: Sequence[SetupCall]) -> None:
        """New set-up calls; the current child (set up the old way) is stopped."""
        self.kill()
        self.setup = list(setup)

    def call(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        budget_s: float | None = None,
        rss_cap: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """``fn(*args, **kwargs)`` in the child, within ``budget_s`` seconds and ``rss_cap`` bytes
        (default: the supervisor's cap); raises :class:`BudgetExceeded`, :class:`WorkerLost` or
        :class:`TaskError` (or the task's own exception when it pickles)."""
        if not self.alive:
            self.kill()
            self._spawn()
        cap = int(rss_cap or self.rss_cap)
        return self._exchange(fn, tuple(args), dict(kwargs or {}), budget_s, progress, cap)

    def _exchange(
        self,
        fn: Callable[..., Any],
        args: tuple,
        kwargs: dict[str, Any],
        budget_s: float | None,
        progress: Callable[[int], None] | None,
        rss_cap: int,
    ) -> Any:
        conn, proc = self._conn, self._proc
        assert conn is not None and proc is not None
        deadline = time.monotonic() + budget_s if budget_s else float("inf")
        try:
            conn.send((fn, args, kwargs, progress is not None))
        except (OSError, EOFError) as exc:
            self.kill()
            raise WorkerLost(f"worker unreachable: {exc}") from None
        while True:
            try:
                ready = conn.poll(self.poll_s)
                msg = conn.recv() if ready else None
            except (OSError, EOFError):
                code = self._reap(proc)
                raise WorkerLost(f"worker exited with code {code}") from None
            if msg is not None:
                kind, value = msg
                if kind == "progress":
                    if progress is not None:
                        progress(int(value))
                    continue
                if kind == "ok":
                    return value
                if isinstance(value, BaseException):
                    raise value
                raise TaskError(str(value))
            if proc.poll() is not None:
                code = self._reap(proc)
                raise WorkerLost(f"worker exited with code {code}")
            if time.monotonic() > deadline:
                self.kill()
                raise BudgetExceeded(f"timeout after {budget_s:.0f} s")
            used = rss_bytes(proc.pid)
            if used > rss_cap:
                self.kill()
                raise BudgetExceeded(f"worker exceeded {rss_cap >> 20} MB (resident {used >> 20} MB)")

    def _reap(self, proc: subprocess.Popen) -> int | None:
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        return code

    def kill(self) -> None:
        """Kill the child (SIGKILL) and forget it; the next call starts a new one."""
        self.memo = set()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.poll() is None:
                try:
                    os.kill(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._proc.wait(timeout=30)
            self._proc = None

    close = kill


# -- the child side ----------------------------------------------------------------------------
def _watch_parent(ppid: int, period: float = 0.5) -> None:
    while True:
        time.sleep(period)
        if os.getppid() != ppid:
            os._exit(0)  # the parent died (e.g. SIGKILL): do not linger as an orphan


def _error_payload(exc: BaseException) -> Any:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    text = f"{type(exc).__name__}: {exc}{where}"
    try:
        import pickle

        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - send the text instead
        return text


def child_main(fd: int) -> None:
    """Loop of the child: receive a call, run it, send ``("ok", value)`` or ``("error", exc)``."""
    conn = Connection(fd)
    lock = threading.Lock()
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    def report(n: int) -> None:
        with lock:
            conn.send(("progress", int(n)))

    while True:
        try:
            fn, args, kwargs, wants_progress = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if wants_progress and _accepts_progress(fn):
                kwargs = {**kwargs, "progress": report}
            reply = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            reply = ("error", _error_payload(exc))
        with lock:
            try:
                conn.send(reply)
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                conn.send(("error", f"result could not be sent: {type(exc).__name__}: {exc}"))


def _accepts_progress(fn: Callable[..., Any]) -> bool:
    try:
        return "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
