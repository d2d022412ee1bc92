"""Local back end: supervised worker processes on this machine, sized by Snakemake's ``--cores``."""

from __future__ import annotations

import concurrent.futures as cf
import pickle
import queue
from collections.abc import Callable
from typing import Any

from recastfit.backends.base import Backend, ProgressFn
from recastfit.backends.supervisor import Supervisor
from recastfit.backends.worker import BkgRef, child_env, init_worker
from recastfit.limits import limit

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """``workers`` persistent child processes, each watched by a :class:`Supervisor`.

    Children pin BLAS/OpenMP/XLA to ``threads_per_worker`` threads from their first
    instruction (environment at start) and receive the background once, at start. A child
    that runs past its batch's budget or above ``rss_cap`` bytes is killed and replaced;
    the batch's future then raises :class:`~recastfit.backends.supervisor.BudgetExceeded`.
    A child that dies (crash, ``os._exit``) raises ``WorkerLost`` and is replaced too.
    """

    name = "local"

    def __init__(self, workers: int, threads_per_worker: int = 1, *, rss_cap: int | None = None) -> None:
        super().__init__(workers, rss_cap=rss_cap)
        self.threads_per_worker = max(1, threads_per_worker)
        self._idle: queue.SimpleQueue[Supervisor] = queue.SimpleQueue()
        self._all: list[Supervisor] = []
        self._threads: cf.ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._threads is not None:
            return
        self._threads = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="recastfit-local")
        for _ in range(self.workers):
            sup = Supervisor(
                rss_cap=self.rss_cap,
                env=child_env(self.threads_per_worker),
                setup=[(init_worker, (self.threads_per_worker,))],
                startup_s=limit("worker_startup_s"),
            )
            self._all.append(sup)
            self._idle.put(sup)

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        """Every child (present and future) receives ``spec`` once, in its set-up call."""
        self.start()
        for sup in self._all:  # a running child lacks it: the next call starts one that has it
            sup.reset([(init_worker, (self.threads_per_worker, spec, bkg_digest))])
        self.background_bytes = self.workers * len(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        return BkgRef(bkg_digest)

    def _run(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, budget_s: float | None, progress: Any
    ) -> Any:
        sup = self._idle.get()
        try:
            return sup.call(fn, args, kwargs, budget_s=budget_s, progress=progress)
        finally:
            self._idle.put(sup)

    def submit_batch(
        self, fn: Callable[..., dict], args: tuple, *, budget_s: float, progress: ProgressFn | None = None
    ) -> cf.Future:
        """``fn(*args)`` in an idle child, killed after ``budget_s`` s or above the memory cap."""
        self.start()
        assert self._threads is not None
        return self._threads.submit(self._run, fn, tuple(args), {}, budget_s, progress)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        """``fn(*args, **kwargs)`` in an idle child with no time budget (memory cap still applies)."""
        self.start()
        assert self._threads is not None
        return self._threads.submit(self._run, fn, args, kwargs, None, None)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=cancel_futures)
        for sup in self._all:
            sup.kill()  # a thread still waiting on it gets WorkerLost and ends
        if self._threads is not None and wait:
            self._threads.shutdown(wait=True)
        self._threads = None
        self._all = []
        self._idle = queue.SimpleQueue()
