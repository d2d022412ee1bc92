"""Worker side: the task function every back end runs, and the per-worker background cache.

A task carries a :class:`BkgRef` (the background's digest, and the spec itself only when
the worker has not seen it yet), a batch of :class:`~recastfit.results.PatchTask` and the
:class:`~recastfit.results.FitSettings`. The background is cached in this module, keyed by
its digest, for the life of the worker process; a worker that does not hold it answers
``{"missing_background": digest}`` and the driver sends it once more with the spec.

This module imports no numpy at import time, so that :func:`init_worker` can set the
BLAS thread variables in a freshly spawned process before numpy is first loaded.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recastfit.results import FitSettings, HypotestResult, PatchTask, digest

__all__ = [
    "BkgRef",
    "THREAD_ENV_VARS",
    "cached_digests",
    "init_worker",
    "pin_threads",
    "preload",
    "run_batch",
]

#: Environment variables read by BLAS / OpenMP / XLA at library load time.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

_CACHE: dict[str, dict] = {}
_PINNED: int | None = None
_LOCK = threading.Lock()


@dataclass(frozen=True)
class BkgRef:
    """How a task names its background: digest, plus a shared-file path or the spec itself."""

    digest: str
    path: str | None = None
    spec: dict | None = None

    def without_spec(self) -> BkgRef:
        return BkgRef(self.digest, self.path, None)


def thread_env(threads: int) -> dict[str, str]:
    """Environment that pins BLAS/OpenMP (and XLA's CPU pool) to ``threads`` threads."""
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def pin_threads(threads: int = 1) -> None:
    """Limit BLAS/OpenMP pools of this process to ``threads`` (env for later loads + threadpoolctl)."""
    global _PINNED
    if _PINNED == threads:
        return
    for name, value in thread_env(threads).items():
        if name == "XLA_FLAGS":
            os.environ.setdefault(name, value)  # keep a user's own XLA flags
        else:
            os.environ[name] = value
    os.environ["RECASTFIT_WORKER_THREADS"] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    _PINNED = threads


def preload(spec: dict, bkg_digest: str | None = None) -> str:
    """Put ``spec`` into this worker's cache (used by broadcasts such as dask's ``Client.run``)."""
    key = bkg_digest or digest(spec)
    with _LOCK:
        _CACHE[key] = spec
    return key


def cached_digests() -> list[str]:
    """Digests of the backgrounds held by this worker process."""
    return sorted(_CACHE)


def _watch_parent(ppid: int, period: float = 1.0) -> None:
    while True:
        time.sleep(period)
        if os.getppid() != ppid:
            os._exit(0)  # the driver died (e.g. SIGKILL): do not linger as an orphan


def init_worker(threads: int = 1, spec: dict | None = None, bkg_digest: str | None = None) -> None:
    """Initializer of a local pool worker: pin threads, cache the background, exit with the parent."""
    pin_threads(threads)  # sets the env vars before numpy is first imported here
    if spec is not None:
        preload(spec, bkg_digest)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()


def _resolve(ref: BkgRef) -> dict | None:
    spec = _CACHE.get(ref.digest)
    if spec is not None:
        return spec
    if ref.spec is not None:
        return _CACHE.setdefault(ref.digest, ref.spec)
    if ref.path and Path(ref.path).is_file():
        loaded = json.loads(Path(ref.path).read_text())
        if digest(loaded) == ref.digest:
            return _CACHE.setdefault(ref.digest, loaded)
    return None


def _error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_batch(ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> dict[str, Any]:
    """Hypothesis tests of ``tasks`` on the cached background; never loses a point to a neighbour.

    Returns ``{"points": [{"key": patch digest, "result": dict} | {"key", "error": text}],
    "worker": "host:pid"}`` or ``{"missing_background": digest}``. If the whole batch raises,
    each point is run alone so one bad patch only costs itself.
    """
    pin_threads(int(os.environ.get("RECASTFIT_WORKER_THREADS", "1")))
    spec = _resolve(ref)
    if spec is None:
        return {"missing_background": ref.digest}
    from recastfit.infer import hypotest_batch

    points: list[dict[str, Any]] = []
    try:
        results = hypotest_batch(spec, tasks, settings)
        if len(results) != len(tasks):
            raise RuntimeError(f"engine returned {len(results)} results for {len(tasks)} tasks")
        points = [{"key": t.key(), "result": _as_dict(r)} for t, r in zip(tasks, results, strict=True)]
    except Exception as batch_exc:  # noqa: BLE001 - isolate the culprit below
        if len(tasks) == 1:
            points = [{"key": tasks[0].key(), "error": _error_text(batch_exc)}]
        else:
            for task in tasks:
                try:
                    (result,) = hypotest_batch(spec, [task], settings)
                    points.append({"key": task.key(), "result": _as_dict(result)})
                except Exception as exc:  # noqa: BLE001 - recorded per point
                    points.append({"key": task.key(), "error": _error_text(exc)})
    return {"points": points, "worker": f"{platform.node()}:{os.getpid()}"}


def _as_dict(result: HypotestResult) -> dict[str, Any]:
    return result.to_dict()
