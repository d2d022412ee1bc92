"""Worker side: the task functions every back end runs, and the per-worker background cache.

A task carries a :class:`BkgRef` (the background's digest, and the spec itself only when
the worker has not seen it yet), a batch of :class:`~recastfit.results.PatchTask` and the
:class:`~recastfit.results.FitSettings`. The background is cached in this module, keyed by
its digest, for the life of the worker process; a worker that does not hold it answers
``{"missing_background": digest}`` and the driver sends it once more with the spec.

:func:`run_batch` computes in the calling process. :func:`bounded_batch` is what remote
workers (Parsl, Dask, Globus Compute) run: it computes in a child process it supervises
(:mod:`recastfit.backends.supervisor`) and answers ``{"budget": reason}`` when the child had
to be killed for time or memory. :func:`json_batch` is the Globus Compute entry point: JSON
in, JSON out.

This module imports no numpy at import time, so that a fresh worker can pin BLAS threads first.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import platform
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recastfit.backends.supervisor import BudgetExceeded, Supervisor
from recastfit.limits import limit
from recastfit.results import FitSettings, HypotestResult, PatchTask, digest

__all__ = [
    "BkgRef",
    "THREAD_ENV_VARS",
    "bounded_batch",
    "child_env",
    "close_supervisor",
    "init_worker",
    "json_batch",
    "pin_threads",
    "preload",
    "run_batch",
    "thread_env",
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
_SUPERVISOR: Supervisor | None = None


@dataclass(frozen=True)
class BkgRef:
    """How a task names its background: digest, plus a shared-file path or the spec itself."""

    digest: str
    path: str | None = None
    spec: dict | None = None


def thread_env(threads: int) -> dict[str, str]:
    """Environment that pins BLAS/OpenMP (and XLA's CPU pool) to ``threads`` threads.

    >>> thread_env(2)["OMP_NUM_THREADS"]
    '2'
    """
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def child_env(threads: int) -> dict[str, str]:
    """:func:`thread_env` for a compute child started here, keeping a user's own ``XLA_FLAGS``.

    >>> "OMP_NUM_THREADS" in child_env(1)
    True
    """
    env = thread_env(threads)
    if os.environ.get("XLA_FLAGS"):
        env.pop("XLA_FLAGS", None)
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
            os.environ[name] = value  # read by libraries loaded later in this process
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    _PINNED = threads


def preload(spec: dict, bkg_digest: str | None = None) -> str:
    """Put ``spec`` into this worker's cache (used by broadcasts such as dask's ``Client.run``)."""
    key = bkg_digest or digest(spec)
    with _LOCK:
        _CACHE[key] = spec
    return key


def init_worker(threads: int = 1, spec: dict | None = None, bkg_digest: str | None = None) -> None:
    """Set-up of a fresh compute process: pin threads, cache the background."""
    pin_threads(threads)
    if spec is not None:
        preload(spec, bkg_digest)


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


def _engine_call(spec: dict, tasks: list[PatchTask], settings: FitSettings, progress: Any) -> list:
    """The engine on ``tasks``, with the hooks it accepts: ``progress(done, total)`` (turned into
    increments for the driver) and a ``deadline``: ``settings.timeout`` per point plus half the
    start-up allowance, so that the engine stops and returns what it finished before the
    watchdog (``timeout`` per point plus the whole allowance) has to kill the process."""
    import time

    from recastfit.infer import hypotest_batch

    accepted = inspect.signature(hypotest_batch).parameters
    hooks: dict[str, Any] = {}
    if progress is not None and "progress" in accepted:
        reported = [0]

        def engine_progress(done: int, total: int | None = None) -> None:
            step = int(done) - reported[0]
            if step > 0:
                reported[0] = int(done)
                progress(step)

        hooks["progress"] = engine_progress
    timeout = getattr(settings, "timeout", None)
    if timeout and "deadline" in accepted:
        allowance = 0.5 * limit("worker_startup_s")
        hooks["deadline"] = time.monotonic() + float(timeout) * len(tasks) + allowance
    return hypotest_batch(spec, tasks, settings, **hooks)


def run_batch(
    ref: BkgRef,
    tasks: list[PatchTask],
    settings: FitSettings,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Hypothesis tests of ``tasks`` on the cached background; never loses a point to a neighbour.

    Returns ``{"points": [{"key": patch digest, "result": dict} | {"key", "error": text}],
    "worker": "host:pid", "timing": {"wall": s, "cpu": s}}`` (the batch's wall and CPU seconds
    in this process, compilation included) or ``{"missing_background": digest}``. If the whole
    batch raises, each point is run alone so one bad patch only costs itself. ``progress(n)``
    is passed to the engine when it accepts it (points finished inside the batch).
    """
    import time

    if _PINNED is None:
        pin_threads(1)
    spec = _resolve(ref)
    if spec is None:
        return {"missing_background": ref.digest}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    points: list[dict[str, Any]] = []
    try:
        results = _engine_call(spec, tasks, settings, progress)
        if len(results) != len(tasks):
            raise RuntimeError(f"engine returned {len(results)} results for {len(tasks)} tasks")
        points = [{"key": t.key(), "result": _as_dict(r)} for t, r in zip(tasks, results, strict=True)]
    except Exception as batch_exc:  # noqa: BLE001 - isolate the culprit below
        if len(tasks) == 1:
            points = [{"key": tasks[0].key(), "error": _error_text(batch_exc)}]
        else:
            for task in tasks:
                try:
                    (result,) = _engine_call(spec, [task], settings, None)
                    points.append({"key": task.key(), "result": _as_dict(result)})
                except Exception as exc:  # noqa: BLE001 - recorded per point
                    points.append({"key": task.key(), "error": _error_text(exc)})
    timing = {"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0}
    return {"points": points, "worker": f"{platform.node()}:{os.getpid()}", "timing": timing}


def _as_dict(result: HypotestResult) -> dict[str, Any]:
    return result.to_dict()


def _supervisor(rss_cap: int) -> Supervisor:
    """This worker process's compute child (one per worker, kept between tasks)."""
    global _SUPERVISOR
    if _SUPERVISOR is None:
        _SUPERVISOR = Supervisor(
            rss_cap=rss_cap, env=child_env(_PINNED or 1), startup_s=limit("worker_startup_s")
        )
        atexit.register(close_supervisor)
    return _SUPERVISOR


def close_supervisor() -> None:
    """Stop this worker's compute child (at exit; the next bounded task starts a new one)."""
    global _SUPERVISOR
    if _SUPERVISOR is not None:
        _SUPERVISOR.close()
        _SUPERVISOR = None


def bounded_batch(
    fn: Callable[..., dict[str, Any]],
    budget_s: float,
    rss_cap: int,
    ref: BkgRef,
    tasks: list[PatchTask],
    settings: FitSettings,
) -> dict[str, Any]:
    """``fn(ref, tasks, settings)`` in a supervised child of this worker, killed after ``budget_s``
    or above ``rss_cap`` bytes; then the answer is ``{"budget": reason}`` (the driver splits)."""
    spec = _resolve(ref)
    if spec is None:
        return {"missing_background": ref.digest}
    sup = _supervisor(rss_cap)
    try:
        if ref.digest not in sup.memo:
            sup.call(preload, (spec, ref.digest), budget_s=sup.startup_s, rss_cap=rss_cap)
            sup.memo.add(ref.digest)
        args = (BkgRef(ref.digest, path=ref.path), tasks, settings)
        return sup.call(fn, args, budget_s=budget_s, rss_cap=rss_cap)
    except BudgetExceeded as exc:
        return {"budget": exc.reason}


def _plain(obj: Any) -> Any:
    """JSON fallback for numpy scalars and arrays in diagnostics."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def json_batch(
    ref: dict[str, Any], tasks: list[dict[str, Any]], settings: dict[str, Any], budget_s: float, rss_cap: int
) -> dict[str, Any]:
    """Globus Compute entry point: JSON-native arguments in, a JSON-native answer out.

    ``ref`` is ``{"digest", "path", "spec"}``, each task ``{"name", "values", "patch"}`` and
    ``settings`` the fields of :class:`FitSettings`.
    """
    bkg = BkgRef(str(ref["digest"]), ref.get("path"), ref.get("spec"))
    patch_tasks = [PatchTask(str(t["name"]), tuple(float(v) for v in t["values"]), t["patch"]) for t in tasks]
    out = bounded_batch(run_batch, float(budget_s), int(rss_cap), bkg, patch_tasks, FitSettings(**settings))
    return json.loads(json.dumps(out, default=_plain, allow_nan=True))


def task_json(ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> tuple[dict, list, dict]:
    """The JSON-native form of a task's arguments (what :func:`json_batch` takes).

    >>> task_json(BkgRef("d"), [PatchTask("a", (1.0,), [])], FitSettings())[1]
    [{'name': 'a', 'values': [1.0], 'patch': []}]
    """
    return (
        {"digest": ref.digest, "path": ref.path, "spec": ref.spec},
        [{"name": t.name, "values": list(t.values), "patch": t.patch} for t in tasks],
        asdict(settings),
    )
