"""The fit driver: skip what is stored, batch the rest, retry failures, commit every point.

>>> # run_fits(bkg, tasks, FitSettings(), BackendConfig("local"), Path("results.sqlite"), cores=4)
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recastfit.backends.base import Backend, BackendConfig, make_executor
from recastfit.backends.worker import BkgRef, run_batch
from recastfit.progress import Progress
from recastfit.results import FitSettings, HypotestResult, PatchTask, digest
from recastfit.store import ResultStore

__all__ = ["RunSummary", "run_fits"]


@dataclass
class RunSummary:
    """What a run did; ``results`` follows the order of the input tasks."""

    total: int = 0
    done: int = 0  # computed and committed in this run (ok or flagged by the engine)
    failed: int = 0  # tasks that raised even after retries (recorded with the error)
    skipped: int = 0  # already in the store, not recomputed
    retried: int = 0  # point re-submissions after an error or a lost worker
    results: list[HypotestResult] = field(default_factory=list)
    payload_bytes_per_task: float = 0.0  # mean bytes of one submitted task (a batch)
    payload_bytes_per_point: float = 0.0  # the same spread over the points it carried
    background_bytes: int = 0  # bytes spent getting the background to the workers
    background_sends: int = 0  # tasks resent with the background after a worker lacked it
    wall_time: float = 0.0
    backend: str = "local"
    workers: int = 1
    errors: dict[str, str] = field(default_factory=dict)  # point name -> last error

    @property
    def exit_code(self) -> int:
        """Non-zero when any point failed."""
        return 1 if self.failed else 0

    def line(self) -> str:
        rate = self.done / self.wall_time if self.wall_time > 0 else 0.0
        return (
            f"fit [{self.backend} x{self.workers}]: {self.total} points: {self.done} done, "
            f"{self.failed} failed, {self.skipped} skipped (stored) in {self.wall_time:.1f} s "
            f"({rate:.2f} pts/s); payload {self.payload_bytes_per_task:.0f} B/task, "
            f"{self.payload_bytes_per_point:.0f} B/point"
        )


@dataclass
class _Job:
    keys: list[str]  # patch digests of the points in this task
    ship: bool = False  # carry the background spec (worker said it had none)


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
        bkg_digest: str,
        task_fn: Callable[..., dict[str, Any]],
        progress: Progress,
        run_id: str,
    ) -> None:
        self.backend, self.store, self.todo, self.settings = backend, store, todo, settings
        self.config, self.spec, self.bkg, self.task_fn = config, bkg_spec, bkg_digest, task_fn
        self.progress, self.run_id = progress, run_id
        self.skey = settings.key()
        self.queue: collections.deque[_Job] = collections.deque()
        self.inflight: dict[cf.Future, _Job] = {}
        self.attempts: dict[str, int] = collections.defaultdict(int)
        self.finished: dict[str, HypotestResult] = {}
        self.errors: dict[str, str] = {}
        self.done = self.failed = self.retried = self.reships = 0
        self.payload_total = self.payload_points = self.payload_tasks = self.ship_bytes = 0
        self.ref = BkgRef(bkg_digest)

    def run(self) -> None:
        keys = list(self.todo)
        size = self.config.batch_size
        self.queue.extend(_Job(keys[i : i + size]) for i in range(0, len(keys), size))
        self.ref = self.backend.ship_background(self.spec, self.bkg)
        for job in list(self.queue)[: self.backend.eager_ship]:
            job.ship = True
        cap = max(2, 2 * self.backend.slots)
        while self.queue or self.inflight:
            while self.queue and len(self.inflight) < cap:
                self._submit(self.queue.popleft())
            finished, _ = cf.wait(list(self.inflight), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                self._handle(fut, self.inflight.pop(fut))

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
        self.inflight[self.backend.submit(self.task_fn, *args)] = job

    def _handle(self, fut: cf.Future, job: _Job) -> None:
        exc = cf.CancelledError("task was cancelled") if fut.cancelled() else fut.exception()
        if exc is not None:
            self._retry_or_fail(job.keys, f"task lost: {type(exc).__name__}: {exc}".strip())
            return
        out = fut.result()
        if "missing_background" in out:
            if job.ship:
                self._retry_or_fail(job.keys, "worker did not keep the background it was sent")
            else:
                self.queue.appendleft(_Job(job.keys, ship=True))
                self.reships += 1
            return
        ok: list[tuple[str, HypotestResult]] = []
        bad: list[tuple[str, str]] = []
        for entry in out["points"]:
            if "error" in entry:
                bad.append((entry["key"], entry["error"]))
            else:
                ok.append((entry["key"], HypotestResult.from_dict(entry["result"])))
        self.store.put_many(self.bkg, self.skey, ok, run_id=self.run_id)  # committed before counted
        for key, res in ok:
            self.finished[key] = res
        self.done += len(ok)
        self.progress.update(len(ok), extra=self._extra())
        for key, err in bad:
            self._retry_or_fail([key], err)

    def _retry_or_fail(self, keys: list[str], error: str) -> None:
        """Resubmit each point alone, or record it as failed once its retries are spent."""
        failed: list[tuple[str, HypotestResult]] = []
        for key in keys:
            self.attempts[key] += 1
            task = self.todo[key]
            if self.attempts[key] <= self.config.retries:
                self.retried += 1
                self.queue.append(_Job([key]))
                continue
            reason = f"failed after {self.attempts[key]} attempt(s): {error}"
            self.errors[task.name] = reason
            res = HypotestResult(
                task.name, list(task.values), "failed", reason=reason, engine=self.settings.engine
            )
            failed.append((key, res))
        if failed:
            self.store.put_many(self.bkg, self.skey, failed, error=True, run_id=self.run_id)
            for key, res in failed:
                self.finished[key] = res
            self.failed += len(failed)
            self.progress.update(len(failed), extra=self._extra())

    def _extra(self) -> str:
        return f"failed {self.failed}" if self.failed else ""


def run_fits(
    bkg_spec: dict,
    tasks: Sequence[PatchTask],
    settings: FitSettings,
    backend: BackendConfig,
    store_path: Path,
    *,
    cores: int = 1,
    quiet: bool = False,
    task_fn: Callable[..., dict[str, Any]] = run_batch,
    executor: Backend | None = None,
) -> RunSummary:
    """Hypothesis tests of ``tasks`` on ``bkg_spec`` through ``backend``, durably.

    Points already stored under (background digest, patch digest, settings key) are skipped.
    Every finished point is committed to the SQLite store at ``store_path`` before it is
    counted, so killing the run loses only points in flight. Tasks that raise (or whose
    worker dies) are retried ``backend.retries`` times, one point per task, then recorded as
    failed with the error. ``task_fn`` (default :func:`recastfit.backends.worker.run_batch`)
    and ``executor`` (an already built back end) are for fault injection and embedding.
    """
    t0 = time.perf_counter()
    bkg = digest(bkg_spec)
    skey = settings.key()
    summary = RunSummary(total=len(tasks), backend=backend.name)
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
            ex = executor or make_executor(backend, cores)
            summary.workers = ex.workers
            progress = Progress(len(todo), label=f"fit [{backend.name}]", quiet=quiet)
            driver = _Driver(
                ex, store, todo, settings, backend, bkg_spec, bkg, task_fn, progress, uuid.uuid4().hex
            )
            try:
                with ex:
                    driver.run()
            finally:
                progress.close()
            finished.update(driver.finished)
            summary.done, summary.failed, summary.retried = driver.done, driver.failed, driver.retried
            summary.errors = driver.errors
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
