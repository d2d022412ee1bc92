"""The fit driver: skip what is stored, batch the rest, retry failures, commit every point.

Every batch runs under a budget, ``timeout`` seconds per point plus a start-up allowance
(limit ``worker_startup_s``), and a memory cap per worker (``backend.max_worker_rss_mb``,
default limit ``max_worker_rss_bytes``), enforced outside the process that computes it. A
batch that overruns is split in halves and run again; a single point that overruns is stored
``failed`` with the reason (``timeout after N s``, ``worker exceeded 2048 MB``). A point whose
fit raises after its retries is stored ``failed`` with the exception as ``reason``. Either
way the run goes on: a failing point is a result.

>>> # run_fits(bkg, tasks, FitSettings(), BackendConfig(), Path("results.sqlite"), cores=4)
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import math
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import recastfit.infer as infer
from recastfit.backends import Backend, BackendConfig, BudgetExceeded, make_backend
from recastfit.backends.worker import BkgRef, run_batch
from recastfit.limits import limit
from recastfit.progress import Progress
from recastfit.results import FitSettings, HypotestResult, PatchTask, digest
from recastfit.store import ResultStore

__all__ = ["DEFAULT_TIMEOUT_S", "RunSummary", "default_batch_size", "run_fits"]

DEFAULT_TIMEOUT_S = 300.0  # per point, when neither the caller nor FitSettings says otherwise
_PER_PARAM_BYTES = 32  # a few dense npars x npars float64 matrices per point in a batch
_BATCH_MEMORY = 256 << 20  # what one batch's per-point matrices may take


def model_parameters(spec: dict) -> int:
    """Parameters of a workspace: one per modifier name, one per bin for per-bin modifiers.

    >>> model_parameters({"channels": [{"name": "c", "samples": [{"data": [1, 2], "modifiers": [
    ...     {"name": "mu", "type": "normfactor"}, {"name": "s", "type": "staterror"}]}]}]})
    3
    """
    sizes: dict[str, int] = {}
    for channel in spec.get("channels", []):
        for sample in channel.get("samples", []):
            nbins = len(sample.get("data", []))
            for mod in sample.get("modifiers", []):
                per_bin = mod.get("type") in ("staterror", "shapesys", "shapefactor")
                sizes[mod.get("name", "")] = max(sizes.get(mod.get("name", ""), 0), nbins if per_bin else 1)
    return sum(sizes.values())


def default_batch_size(settings: FitSettings, spec: dict) -> int:
    """Points per task when ``backend.batch_size`` is not set: 4 for pyhf; for the fast
    engine the engine's own suggestion if it has one, else 256 halved until the per-point
    matrices of a batch fit in 256 MB (at least 8).

    >>> default_batch_size(FitSettings(), {})
    4
    >>> default_batch_size(FitSettings(engine="fast"), {"channels": []}) >= 8
    True
    """
    if settings.engine != "fast":
        return 4
    if hasattr(infer, "suggested_batch_size"):
        return max(1, int(infer.suggested_batch_size(spec)))
    npars = model_parameters(spec)
    size = 256
    while size > 8 and size * _PER_PARAM_BYTES * npars * npars > _BATCH_MEMORY:
        size //= 2
    return size


@dataclass
class RunSummary:
    """What a run did; ``results`` follows the order of the input tasks."""

    total: int = 0
    done: int = 0  # computed in this run and stored with status "ok"
    failed: int = 0  # computed in this run and stored "failed" (engine flag, error or budget)
    skipped: int = 0  # already in the store, not recomputed
    retried: int = 0  # point re-submissions after an error or a lost worker
    splits: int = 0  # batches split in halves after running out of time or memory
    results: list[HypotestResult] = field(default_factory=list)
    payload_bytes_per_task: float = 0.0  # mean bytes of one submitted task (a batch)
    payload_bytes_per_point: float = 0.0  # the same spread over the points it carried
    background_bytes: int = 0  # bytes spent getting the background to the workers
    background_sends: int = 0  # tasks resent with the background after a worker lacked it
    wall_time: float = 0.0
    backend: str = "local"
    workers: int = 1
    batch_size: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # point name -> reason it failed
    #: per answered task: (worker, points, wall s, CPU s) in the worker, compilation included
    batches: list[tuple[str, int, float, float]] = field(default_factory=list)

    @property
    def engine_wall(self) -> float:
        """Seconds workers spent computing answered tasks (summed over workers)."""
        return sum(b[2] for b in self.batches)

    @property
    def exit_code(self) -> int:
        """0 once every point has a stored result: a failed point is a result, not a crash."""
        return 0 if self.done + self.failed + self.skipped >= len(self.results) else 1

    def line(self) -> str:
        rate = (self.done + self.failed) / self.wall_time if self.wall_time > 0 else 0.0
        return (
            f"fit [{self.backend} x{self.workers}]: {self.total} points: {self.done} done, "
            f"{self.failed} failed, {self.skipped} skipped (stored) in {self.wall_time:.1f} s "
            f"({rate:.2f} pts/s); payload {self.payload_bytes_per_task:.0f} B/task, "
            f"{self.payload_bytes_per_point:.0f} B/point"
        )


class BadAnswer(Exception):
    """A worker's answer that does not have the shape of :func:`run_batch`'s."""


@dataclass
class _Job:
    keys: list[str]  # patch digests of the points in this task
    ship: bool = False  # carry the background spec (worker said it had none)
    reported: int = 0  # points the engine reported finished while the task ran
    started: float = 0.0  # time.monotonic() at submission
    budget: float = 0.0  # seconds the workers may spend on it


class _Driver:
    """State of one run (kept out of ``run_fits`` for readability)."""

    def __init__(
        self,
        backend: Backend,
        store: ResultStore,
        todo: dict[str, PatchTask],
        settings: FitSettings,
        config: BackendConfig,
        bkg_spec: dict,
        task_fn: Callable[..., dict[str, Any]],
        progress: Progress,
        *,
        batch_size: int,
        timeout_s: float,
    ) -> None:
        self.backend, self.store, self.todo, self.settings = backend, store, todo, settings
        self.config, self.spec, self.task_fn, self.progress = config, bkg_spec, task_fn, progress
        self.batch_size, self.timeout_s = batch_size, timeout_s
        self.bkg, self.skey, self.run_id = digest(bkg_spec), settings.key(), uuid.uuid4().hex
        self.queue: collections.deque[_Job] = collections.deque()
        self.inflight: dict[cf.Future, _Job] = {}
        self.attempts: dict[str, int] = collections.defaultdict(int)
        self.finished: dict[str, HypotestResult] = {}
        self.errors: dict[str, str] = {}
        self.batches: list[tuple[str, int, float, float]] = []
        self.done = self.failed = self.retried = self.reships = self.splits = 0
        self.payload_total = self.payload_points = self.payload_tasks = self.ship_bytes = 0
        self.ref = BkgRef(self.bkg)
        self._lock = threading.Lock()
        self._shown = 0  # points stored; the line adds those reported by running tasks
        self._remote = backend.name != "local"  # local children are watched directly

    def run(self) -> None:
        keys = list(self.todo)
        size = self.batch_size
        self.queue.extend(_Job(keys[i : i + size]) for i in range(0, len(keys), size))
        self.ref = self.backend.ship_background(self.spec, self.bkg)
        for job in list(self.queue)[: self.backend.eager_ship]:
            job.ship = True
        cap = max(2, 2 * self.backend.slots)
        while self.queue or self.inflight:
            while self.queue and len(self.inflight) < cap:
                self._submit(self.queue.popleft())
            finished, _ = cf.wait(list(self.inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                self._handle(fut, self.inflight.pop(fut))
            self._overdue()
            self._draw()

    def budget(self, points: int) -> float:
        """Seconds a task of ``points`` points may run before its worker is killed."""
        return self.timeout_s * points + limit("worker_startup_s")

    def _submit(self, job: _Job) -> None:
        ref = replace(self.ref, spec=self.spec) if job.ship else self.ref
        args = (ref, [self.todo[k] for k in job.keys], self.settings)
        nbytes = self.backend.payload_bytes(self.task_fn, *args)
        if job.ship:
            self.ship_bytes += nbytes
        else:
            self.payload_total += nbytes
            self.payload_tasks += 1
            self.payload_points += len(job.keys)
        job.started, job.budget, job.reported = time.monotonic(), self.budget(len(job.keys)), 0

        def report(n: int, job: _Job = job) -> None:  # called from back-end threads
            with self._lock:
                job.reported = min(len(job.keys), job.reported + max(0, int(n)))

        fut = self.backend.submit_batch(self.task_fn, args, budget_s=job.budget, progress=report)
        self.inflight[fut] = job

    def _overdue(self) -> None:
        """Remote back ends: give up on a task with no answer long after its budget (a lost worker)."""
        if not self._remote:
            return
        now = time.monotonic()
        for fut, job in list(self.inflight.items()):
            if now - job.started > 3 * job.budget:
                del self.inflight[fut]
                fut.cancel()
                self._retry_or_fail(job.keys, f"no answer after {now - job.started:.0f} s")

    def _handle(self, fut: cf.Future, job: _Job) -> None:
        exc = cf.CancelledError("task was cancelled") if fut.cancelled() else fut.exception()
        if isinstance(exc, BudgetExceeded):
            self._over_budget(job, exc.reason)
            return
        if exc is not None:
            self._retry_or_fail(job.keys, f"task lost: {type(exc).__name__}: {exc}".strip())
            return
        try:
            out = _check_answer(fut.result(), job.keys)
        except BadAnswer as bad:
            self._retry_or_fail(job.keys, f"bad answer from worker: {bad}")
            return
        if "budget" in out:
            self._over_budget(job, str(out["budget"]))
            return
        self._timing(out, len(job.keys))
        if "missing_background" in out:
            if job.ship:
                self._retry_or_fail(job.keys, "worker did not keep the background it was sent")
            else:
                self.queue.appendleft(_Job(job.keys, ship=True))
                self.reships += 1
            return
        good: list[tuple[str, HypotestResult]] = []
        bad: list[tuple[str, str]] = []
        late: list[str] = []  # the engine stopped at its deadline before these
        for entry in out["points"]:
            if "error" in entry:
                bad.append((entry["key"], entry["error"]))
            elif _timed_out(entry["result"]):
                late.append(entry["key"])
            else:
                good.append((entry["key"], entry["result"]))
        self.store.put_many(self.bkg, self.skey, good, run_id=self.run_id)  # committed before counted
        for key, res in good:
            self.finished[key] = res
            if res.ok:
                self.done += 1
            else:
                self.failed += 1
                self.errors[res.name] = res.reason or "flagged failed by the engine"
        self._count(len(good))
        for key, err in bad:
            self._retry_or_fail([key], err)
        if late:
            self._over_budget(_Job(late), f"timeout after {self.timeout_s * len(late):.0f} s")

    def _timing(self, out: dict[str, Any], points: int) -> None:
        """Record the worker's own wall and CPU seconds for a task (when it sent plausible ones)."""
        t = out.get("timing")
        if not isinstance(t, dict):
            return
        wall, cpu = t.get("wall"), t.get("cpu")
        if all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1e7 for v in (wall, cpu)):
            self.batches.append((str(out.get("worker", "?"))[:100], points, float(wall), float(cpu)))

    def _over_budget(self, job: _Job, reason: str) -> None:
        """Split an overrunning batch in halves; a single point that overruns is failed."""
        if len(job.keys) > 1:
            half = (len(job.keys) + 1) // 2
            self.splits += 1
            self.queue.appendleft(_Job(job.keys[half:]))
            self.queue.appendleft(_Job(job.keys[:half]))
            return
        self._fail(job.keys, reason)

    def _retry_or_fail(self, keys: list[str], error: str) -> None:
        """Resubmit each point alone, or record it as failed once its retries are spent."""
        for key in keys:
            self.attempts[key] += 1
            if self.attempts[key] <= self.config.retries:
                self.retried += 1
                self.queue.append(_Job([key]))
            else:
                self._fail([key], f"failed after {self.attempts[key]} attempt(s): {error}")

    def _fail(self, keys: list[str], reason: str) -> None:
        failed: list[tuple[str, HypotestResult]] = []
        for key in keys:
            task = self.todo[key]
            self.errors[task.name] = reason
            res = HypotestResult(
                task.name, list(task.values), "failed", reason=reason, engine=self.settings.engine
            )
            failed.append((key, res))
        self.store.put_many(self.bkg, self.skey, failed, error=True, run_id=self.run_id)
        for key, res in failed:
            self.finished[key] = res
        self.failed += len(failed)
        self._count(len(failed))

    def _count(self, n: int) -> None:
        """``n`` more points are stored (the line also shows points reported by running tasks)."""
        with self._lock:
            self._shown += n

    def _draw(self) -> None:
        with self._lock:
            live = sum(j.reported for j in self.inflight.values())
            shown = self._shown + live
        delta = shown - self.progress.done
        extra = f"failed {self.failed}" if self.failed else ""
        if delta > 0:
            self.progress.update(delta, extra=extra)
        else:
            self.progress.update(0, extra=extra)


_POINT_KEYS = frozenset(HypotestResult.__dataclass_fields__)


def _timed_out(res: HypotestResult) -> bool:
    """Flagged ``failed`` by the engine because it reached the batch's deadline."""
    return not res.ok and (res.reason or "").startswith("timeout")


def _check_answer(out: Any, keys: list[str]) -> dict[str, Any]:
    """``out`` if it has the shape of a :func:`run_batch` answer for ``keys``, with results
    turned into :class:`HypotestResult`; else :class:`BadAnswer` (a worker is not trusted to be right)."""
    if not isinstance(out, dict):
        raise BadAnswer(f"a {type(out).__name__}, not a mapping")
    if "budget" in out or "missing_background" in out:
        return out
    points = out.get("points")
    if not isinstance(points, list) or len(points) != len(keys):
        raise BadAnswer(f"expected {len(keys)} points")
    wanted = set(keys)
    checked: list[dict[str, Any]] = []
    for entry in points:
        if not isinstance(entry, dict) or entry.get("key") not in wanted:
            raise BadAnswer("a point this task did not ask for")
        wanted.discard(entry["key"])
        if "error" in entry:
            checked.append({"key": entry["key"], "error": str(entry["error"])[:2000]})
            continue
        res = entry.get("result")
        if not isinstance(res, dict) or not set(res) <= _POINT_KEYS:
            raise BadAnswer("a result that is not a hypothesis-test record")
        try:
            parsed = HypotestResult.from_dict(res)
        except (TypeError, ValueError) as exc:
            raise BadAnswer(f"a malformed result: {exc}") from None
        if parsed.ok and not _finite_cls(parsed):
            raise BadAnswer("an 'ok' result without finite CLs values")
        checked.append({"key": entry["key"], "result": parsed})
    return {**out, "points": checked}


def _finite_cls(res: HypotestResult) -> bool:
    values = [res.cls_obs, *(res.cls_exp or [])]
    return all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def run_fits(
    bkg_spec: dict,
    tasks: Sequence[PatchTask],
    settings: FitSettings,
    backend: BackendConfig,
    store_path: Path,
    *,
    cores: int = 1,
    quiet: bool = False,
    timeout_s: float | None = None,
    max_memory_mb: int | None = None,
    task_fn: Callable[..., dict[str, Any]] = run_batch,
    executor: Backend | None = None,
) -> RunSummary:
    """Hypothesis tests of ``tasks`` on ``bkg_spec`` through ``backend``, durably.

    Points already stored under (background digest, patch digest, settings key) are skipped.
    Every finished point is committed to the SQLite store at ``store_path`` before it is
    counted, so killing the run loses only points in flight. Tasks that raise (or whose
    worker dies) are retried ``backend.retries`` times, one point per task, then recorded as
    failed with the error. ``timeout_s`` is the budget per point (default: ``settings.timeout``
    if the settings carry one, else :data:`DEFAULT_TIMEOUT_S`); ``max_memory_mb`` the resident
    memory of one worker (default limit ``max_worker_rss_bytes``, 2 GiB). ``task_fn`` (default
    :func:`recastfit.backends.worker.run_batch`) and ``executor`` (an already built back end)
    are for fault injection and embedding.
    """
    t0 = time.perf_counter()
    bkg = digest(bkg_spec)
    skey = settings.key()
    timeout = float(timeout_s or getattr(settings, "timeout", None) or DEFAULT_TIMEOUT_S)
    if "timeout" in FitSettings.__dataclass_fields__:  # the engine's own deadline (not in the key)
        settings = replace(settings, timeout=timeout)
    batch_size = backend.batch_size or default_batch_size(settings, bkg_spec)
    summary = RunSummary(total=len(tasks), backend=backend.name, batch_size=batch_size)
    with ResultStore(store_path) as store:
        keys = [t.key() for t in tasks]
        stored = store.get_many(bkg, keys, skey)
        todo: dict[str, PatchTask] = {}
        for key, task in zip(keys, tasks, strict=True):
            if key not in stored:
                todo.setdefault(key, task)
        summary.skipped = sum(1 for k in keys if k in stored)
        finished: dict[str, HypotestResult] = dict(stored)
        if todo:
            rss_cap = int(max_memory_mb) << 20 if max_memory_mb else None
            ex = executor or make_backend(backend, cores, rss_cap=rss_cap)
            summary.workers = ex.workers
            if backend.batch_size is None:  # chosen here: keep every worker busy on small runs
                batch_size = summary.batch_size = max(1, min(batch_size, math.ceil(len(todo) / ex.workers)))
            progress = Progress(len(todo), label=f"fit [{backend.name}]", quiet=quiet)
            driver = _Driver(
                ex, store, todo, settings, backend, bkg_spec, task_fn, progress,
                batch_size=batch_size, timeout_s=timeout,
            )  # fmt: skip
            try:
                with ex:
                    driver.run()
            finally:
                progress.close()
            finished.update(driver.finished)
            summary.done, summary.failed, summary.retried = driver.done, driver.failed, driver.retried
            summary.splits, summary.errors = driver.splits, driver.errors
            summary.batches = driver.batches
            summary.background_bytes = ex.background_bytes + driver.ship_bytes
            summary.background_sends = driver.reships
            if driver.payload_tasks:
                summary.payload_bytes_per_task = driver.payload_total / driver.payload_tasks
                summary.payload_bytes_per_point = driver.payload_total / driver.payload_points
    summary.results = [_for_task(finished[k], t) for k, t in zip(keys, tasks, strict=True)]
    summary.wall_time = time.perf_counter() - t0
    if not quiet:
        print(summary.line(), file=sys.stderr)
        for name, err in list(summary.errors.items())[:10]:
            print(f"  failed: {name}: {err}", file=sys.stderr)
    return summary


def _for_task(res: HypotestResult, task: PatchTask) -> HypotestResult:
    """The stored result under this task's own name and values (duplicates share a fit)."""
    if res.name == task.name and list(res.values) == list(task.values):
        return res
    return replace(res, name=task.name, values=list(task.values), diagnostics=dict(res.diagnostics))
