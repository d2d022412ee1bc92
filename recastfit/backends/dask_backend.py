"""Dask back end: a distributed ``Client`` to a scheduler address, or a ``LocalCluster``."""

from __future__ import annotations

import concurrent.futures as cf
import pickle
import threading
from typing import Any

from recastfit.backends.base import Backend, RunDir
from recastfit.backends.worker import BkgRef, pin_threads, preload

__all__ = ["DaskBackend"]


def _bridge(dask_future: Any, keep: dict[int, Any], lock: threading.Lock) -> cf.Future:
    """A ``concurrent.futures.Future`` that follows ``dask_future`` (kept alive until done)."""
    out: cf.Future = cf.Future()
    out.set_running_or_notify_cancel()
    with lock:
        keep[id(out)] = dask_future

    def _done(fut: Any) -> None:
        try:
            if fut.status == "finished":
                out.set_result(fut.result())
            else:
                exc = fut.exception()
                out.set_exception(exc if isinstance(exc, BaseException) else RuntimeError(str(fut.status)))
        except BaseException as exc:  # noqa: BLE001 - cancelled, lost, deserialisation errors
            if not out.done():
                out.set_exception(exc)
        finally:
            with lock:
                keep.pop(id(out), None)

    dask_future.add_done_callback(_done)
    return out


class DaskBackend(Backend):
    """Tasks go to dask workers; the background is broadcast once with ``Client.run``.

    With no ``scheduler_address`` a ``LocalCluster`` of ``workers`` single-threaded worker
    processes is started (dask pins OMP/MKL/OpenBLAS to one thread in them); workers that
    join later are sent the background on their first task.
    """

    name = "dask"

    def __init__(
        self,
        workers: int,
        scheduler_address: str | None = None,
        run_dir: str | None = None,
        *,
        rss_cap: int | None = None,
    ) -> None:
        super().__init__(workers, rss_cap=rss_cap)
        self.scheduler_address = scheduler_address
        self._run_dir_config = run_dir
        self._run_dir: RunDir | None = None
        self._cluster: Any = None
        self._client: Any = None
        self._keep: dict[int, Any] = {}
        self._lock = threading.Lock()

    @property
    def slots(self) -> int:
        if self._client is not None:
            try:
                return max(1, sum(self._client.nthreads().values()))
            except Exception:  # noqa: BLE001 - scheduler briefly unreachable
                pass
        return self.workers

    def start(self) -> None:
        if self._client is not None:
            return
        from distributed import Client, LocalCluster

        if self.scheduler_address:
            self._client = Client(self.scheduler_address)
        else:
            self._run_dir = RunDir(self._run_dir_config, "recastfit-dask-")
            self._cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                local_directory=str(self._run_dir.path),
                silence_logs=40,
            )
            self._client = Client(self._cluster)
        self._client.run(pin_threads, 1)

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        self.start()
        reached = self._client.run(preload, spec, bkg_digest)
        self.background_bytes = len(reached) * len(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        return BkgRef(bkg_digest)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        self.start()
        return _bridge(self._client.submit(fn, *args, pure=False, **kwargs), self._keep, self._lock)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._client is not None:
            if cancel_futures:
                with self._lock:
                    pending = list(self._keep.values())
                if pending:
                    self._client.cancel(pending)
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        if self._run_dir is not None:
            self._run_dir.close()
            self._run_dir = None
