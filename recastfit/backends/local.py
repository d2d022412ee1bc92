"""Local back end: a process pool (spawn) sized by Snakemake's ``--cores``, threads pinned."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import pickle
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from recastfit.backends.base import Backend
from recastfit.backends.worker import BkgRef, init_worker

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """``ProcessPoolExecutor`` whose workers get the background once, in their initializer.

    Workers are started with ``spawn`` (jax is not fork-safe) and pin BLAS/OpenMP to
    ``threads_per_worker`` threads before numpy loads. A worker that dies breaks the pool;
    the next :meth:`submit` builds a fresh one (the driver resubmits what was lost).
    """

    name = "local"

    def __init__(self, workers: int, threads_per_worker: int = 1, start_method: str = "spawn") -> None:
        super().__init__(workers)
        self.threads_per_worker = max(1, threads_per_worker)
        self._ctx = multiprocessing.get_context(start_method)
        self._initargs: tuple[Any, ...] = (self.threads_per_worker, None, None)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=self._ctx, initializer=init_worker, initargs=self._initargs
        )

    def start(self) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = self._new_pool()

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        """Rebuild the pool so each worker receives ``spec`` once, through its initializer."""
        with self._lock:
            self._initargs = (self.threads_per_worker, spec, bkg_digest)
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        self.background_bytes = self.workers * len(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        return BkgRef(bkg_digest)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        self.start()
        with self._lock:
            assert self._pool is not None
            try:
                return self._pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool:
                self.restarts += 1
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
                self._pool = None
