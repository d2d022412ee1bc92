"""Running a yields scan through the runner: rows in chunks -> :func:`recastfit.runner.run_fits` -> CLs table.

The one fit path: every hypothesis test goes through :func:`~recastfit.runner.run_fits` with
the configured back end and the SQLite store ``<out>/results.sqlite``, so a scan killed at any
moment (even ``kill -9``) resumes where it stopped: rows already stored are read back, only
the missing ones are fitted. Rows are read ``chunk_rows`` at a time; at most two chunks' patches
are held in memory: one chunk is fitted while the next is read, patched and queued behind it, so
workers never wait at a chunk boundary. One back end (one worker pool, its compiled engines)
serves every chunk and analysis of a scan (:class:`SharedBackend`). Rows of a chunk are fitted
largest signal first, in batches of :data:`SCAN_BATCH_SIZE` (or the runner's model-derived size
when smaller) unless the ``backend:`` block sets ``batch_size``.

Output: ``cls.parquet`` (per row and analysis: status, reason, cls_obs, cls_exp_0..4), then
``points.parquet`` and ``summary.json`` from :func:`recastfit.scan.summary.scan_table`.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recastfit.backends import make_backend as make_executor
from recastfit.backends.base import Backend, BackendConfig, BkgRef
from recastfit.errors import ConfigError, InputError
from recastfit.fileio import load_json_file
from recastfit.limits import limit
from recastfit.patches import SignalOptions
from recastfit.results import FitSettings, PatchTask
from recastfit.runner import default_batch_size, run_fits
from recastfit.scan.config import ScanConfig
from recastfit.scan.summary import ScanSummary, scan_table
from recastfit.scan.tables import ID_CANDIDATES, check_numeric, iter_batches, open_dataset, open_writer
from recastfit.scan.tasks import YieldAnalysis, signal_size, tasks_from_rows
from recastfit.store import ResultStore

__all__ = ["SCAN_BATCH_SIZE", "ScanOutcome", "SharedBackend", "cls_table_from_yields", "run_scan"]

#: Largest batch a scan gives the fast engine when ``backend.batch_size`` is not set (else the
#: runner's model-derived size, when smaller). Scan rows are heterogeneous: a vmapped fit runs
#: until the slowest row of its batch stops, so small batches of rows sorted by signal size beat
#: the model-derived 512 (stau, 2,000 rows, 10% 300x, 2 workers: batch 32 took 83 s and 49 CPU s,
#: 512 took 312 s and 159 CPU s, the old 256 (padded to 512 by the engine) 156 s and 85 CPU s).
#: 32 is one of the engine's compiled sizes, so no row is padding.
SCAN_BATCH_SIZE = 32


class SharedBackend:
    """One back end kept open across many :func:`run_fits` calls (chunks x analyses of one scan).

    ``run_fits`` enters and leaves its executor per call; this wrapper ignores those shutdowns
    (call :meth:`close` at the end) so worker processes, their cached backgrounds and compiled
    engines survive from chunk to chunk. The first background goes out through the back end's
    own :meth:`~recastfit.backends.base.Backend.ship_background`; later ones (other analyses)
    ride with the first task each worker gets (the runner's missing-background protocol), since
    re-shipping would restart a local pool. Every other attribute and method (``workers``,
    ``slots``, ``payload_bytes``, budgets, ...) is the wrapped back end's own: the wrapper is a
    delegate, not a subclass, so it follows the back-end interface as it evolves.

    Several :func:`run_fits` calls may share it at once (from threads): start and shipping are
    locked, ``eager_ship`` is per thread, and once closed every submission raises, so a fit
    still running when the scan stops ends instead of restarting workers.
    """

    def __init__(self, make: Callable[[], Backend]) -> None:
        self._inner = make()
        self._refs: dict[str, BkgRef] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    def __getattr__(self, attr: str) -> Any:  # only called for attributes not defined here
        return getattr(self.__dict__["_inner"], attr)

    @property
    def eager_ship(self) -> int:
        """Tasks of this thread's last shipped background that carry the spec themselves."""
        return getattr(self._local, "eager_ship", 0)

    def start(self) -> None:
        with self._lock:
            inner = self._open()
            if not self._started:
                inner.start()
                self._started = True

    def _open(self) -> Backend:
        if self._closed:
            raise RuntimeError("the scan's back end is closed")
        return self._inner

    def submit_batch(self, *args: Any, **kwargs: Any) -> Any:
        return self._open().submit_batch(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return self._open().submit(*args, **kwargs)

    def __enter__(self) -> SharedBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Kept open: the scan closes the shared back end itself (:meth:`close`)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Ignored, as :meth:`__exit__`."""

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        with self._lock:
            if bkg_digest in self._refs:
                self._local.eager_ship = 0
                return self._refs[bkg_digest]
            if not self._refs:
                ref = self._inner.ship_background(spec, bkg_digest)
                self._local.eager_ship = self._inner.eager_ship
            else:
                ref = BkgRef(bkg_digest)
                self._local.eager_ship = self._inner.workers
            self._refs[bkg_digest] = ref
            return ref

    def close(self) -> None:
        """Stop the wrapped back end's workers (idempotent); later submissions raise."""
        self._closed = True
        self._inner.shutdown(wait=True, cancel_futures=True)


@dataclass
class ScanOutcome:
    """What a scan run did (counts are rows x analyses, except ``rows``)."""

    rows: int = 0
    fitted: int = 0  # computed in this run
    stored: int = 0  # read back from the store (already done by an earlier run)
    failed: int = 0  # fits that failed (after retries)
    invalid: int = 0  # rows not fitted (bad name or yields): failed with the reason
    wall_time: float = 0.0
    patch_time: float = 0.0  # seconds building patches (rows -> tasks) in this process
    fit_time: float = 0.0  # seconds in run_fits (store look-ups, dispatch, waiting for workers)
    engine_wall: float = 0.0  # seconds workers computed answered tasks (summed over workers)
    engine_cpu: float = 0.0  # CPU seconds of those tasks
    first_wall: float = 0.0  # of engine_wall: each worker's first task (start-up compilation)
    tasks: int = 0  # answered tasks
    workers: int = 0
    summary: ScanSummary | None = None
    cls_path: Path | None = None
    points_path: Path | None = None
    summary_path: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.invalid else 0

    def accounting(self) -> str:
        """Where the wall time went: patches, fits (worker busy share), engine CPU per row.

        >>> ScanOutcome(rows=10, fitted=10, wall_time=2.0, fit_time=1.5, engine_wall=2.4,
        ...             engine_cpu=2.0, tasks=2, workers=2).accounting()  # doctest: +NORMALIZE_WHITESPACE
        'scan time: 2.0 s wall: patches 0.0 s, fits 1.5 s (2 tasks; workers busy 80% of 2 x 1.5 s;
        first task per worker 0.0 s); engine 240.0 ms/fit wall, 200.0 ms/fit CPU'
        """
        n = max(self.fitted, 1)
        fits = self.fit_time
        busy = self.engine_wall / (self.workers * fits) if self.workers and fits else 0.0
        return (
            f"scan time: {self.wall_time:.1f} s wall: patches {self.patch_time:.1f} s, fits {fits:.1f} s "
            f"({self.tasks} tasks; workers busy {busy:.0%} of {self.workers} x {fits:.1f} s; "
            f"first task per worker {self.first_wall:.1f} s); "
            f"engine {1000 * self.engine_wall / n:.1f} ms/fit wall, "
            f"{1000 * self.engine_cpu / n:.1f} ms/fit CPU"
        )

    def line(self) -> str:
        s = self.summary
        excl = (
            f"{s.n_excluded}/{s.n_points} rows excluded ({s.n_failed} with no valid analysis); " if s else ""
        )
        return (
            f"recastfit scan: {excl}{self.rows} rows: {self.fitted} fits done, {self.stored} stored, "
            f"{self.failed} failed, {self.invalid} invalid in {self.wall_time:.1f} s"
        )


def load_analyses(cfg: ScanConfig) -> list[YieldAnalysis]:
    """Read each analysis' workspace (size-capped, strict JSON) and check its columns against it."""
    out = []
    for entry in cfg.analyses:
        spec = load_json_file(entry.workspace, limit_name="max_workspace_bytes", what="workspace")
        if not isinstance(spec, dict) or not isinstance(spec.get("channels"), list) or not spec["channels"]:
            raise InputError(str(entry.workspace), "channels", "expected a pyhf workspace with channels")
        try:
            opts = SignalOptions(
                **{**entry.options, "replace_samples": tuple(entry.options.get("replace_samples", ()))}
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                cfg.file, f"scan.analyses.{entry.name}.options", "valid signal options", str(exc)
            ) from None
        ana = YieldAnalysis(entry.name, spec, entry.columns, opts)
        ana.check(cfg.file)
        out.append(ana)
    return out


def _id_column(path: Path, names: Sequence[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in names:
            raise InputError(str(path), wanted, f"no such id column; the table has {list(names)[:20]}")
        return wanted
    found = next((c for c in ID_CANDIDATES if c in names), None)
    if found is None:
        raise InputError(str(path), "columns", f"expected a point-name column, one of {list(ID_CANDIDATES)}")
    return found


def _check_table(
    path: Path, dataset: Any, id_column: str, parameters: Sequence[str], analyses: Sequence[YieldAnalysis]
) -> int:
    """Column types, row count (capped) and unique point names, read before any fit; returns the rows."""
    import pyarrow.types as pt

    schema = dataset.schema
    typ = schema.field(id_column).type
    if not (pt.is_string(typ) or pt.is_large_string(typ) or pt.is_integer(typ)):
        raise InputError(str(path), id_column, f"expected point names (strings), got a column of type {typ}")
    check_numeric(path, schema, parameters, "a model parameter")
    for a in analyses:
        check_numeric(path, schema, list(a.columns), f"yields of analysis '{a.name}'")
    cap = int(limit("max_scan_rows"))
    seen: set[str] = set()
    n = 0
    for batch in iter_batches(path, [id_column], 65536, dataset):
        for v in batch.column(0).to_pylist():
            key = str(v)
            if key in seen and v is not None:
                raise InputError(str(path), id_column, f"point name '{key[:80]}' appears twice")
            seen.add(key)
        n += batch.num_rows
        if n > cap:
            raise InputError(
                str(path), None, f"more than {cap} rows (raise RECASTFIT_MAX_SCAN_ROWS to allow it)"
            )
    if n == 0:
        raise InputError(str(path), None, "the yields table has no rows")
    return n


def _backend_config(
    cfg_backend: dict[str, Any], settings: FitSettings, analyses: Sequence[YieldAnalysis], file: str
) -> BackendConfig:
    """The scan's back end; with no ``batch_size``: the runner's choice, at most :data:`SCAN_BATCH_SIZE`.

    >>> _backend_config({}, FitSettings(engine="fast"), [], "s.yaml").batch_size
    32
    >>> _backend_config({"batch_size": 7}, FitSettings(engine="fast"), [], "s.yaml").batch_size
    7
    """
    backend = BackendConfig.from_dict(cfg_backend, file=file)
    if backend.batch_size is None:
        size = min([SCAN_BATCH_SIZE, *(default_batch_size(settings, a.bkg_spec) for a in analyses)])
        backend = dataclasses.replace(backend, batch_size=size)
    return backend


@dataclass
class _Part:
    """One analysis on one chunk of rows: its entries and the running (or finished) fit."""

    analysis: YieldAnalysis
    entries: list[PatchTask | str]
    order: list[int]  # fit order (largest signal first) -> index into the chunk's tasks
    future: cf.Future | None


@dataclass
class _Fitter:
    """Fits chunks of rows through :func:`run_fits`, one shared back end for the whole scan.

    :meth:`submit` starts a chunk's fit in a thread and returns at once, so the scan reads and
    patches the next chunk, and queues its tasks, while the workers still compute this one: no
    worker waits at a chunk boundary for the slowest batch of the chunk.
    """

    settings: FitSettings
    backend: BackendConfig
    store: Path
    cores: int
    source: str
    outcome: ScanOutcome
    quiet: bool = False
    shared: SharedBackend | None = None
    seen: set[str] = dataclasses.field(default_factory=set)  # workers that answered a task
    pool: cf.ThreadPoolExecutor | None = None
    span: list[float] = dataclasses.field(default_factory=list)  # fit start and end times

    def executor(self) -> SharedBackend:
        if self.shared is None:
            self.shared = SharedBackend(lambda: make_executor(self.backend, self.cores))
        return self.shared

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()  # running fits fail fast from here on
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(
        self,
        analysis: YieldAnalysis,
        rows: dict[str, list[Any]],
        id_column: str,
        parameters: Sequence[str],
        concurrency: int = 2,
    ) -> _Part:
        """Patches of one analysis on one chunk; their fit starts in the background."""
        t0 = time.perf_counter()
        entries = tasks_from_rows(
            rows, analysis, id_column=id_column, parameters=parameters, source=self.source
        )
        self.outcome.patch_time += time.perf_counter() - t0
        tasks = [e for e in entries if isinstance(e, PatchTask)]
        if not tasks:
            return _Part(analysis, entries, [], None)
        # largest signals first: the slow points share batches, and those start first
        order = sorted(range(len(tasks)), key=lambda i: -signal_size(tasks[i]))
        if self.pool is None:
            self.pool = cf.ThreadPoolExecutor(max(2, concurrency), thread_name_prefix="recastfit-scan")
        executor = self.executor()
        future = self.pool.submit(self._fit, analysis.bkg_spec, [tasks[i] for i in order], executor)
        return _Part(analysis, entries, order, future)

    def _fit(self, bkg_spec: dict, tasks: list[PatchTask], executor: SharedBackend) -> Any:
        start = time.perf_counter()
        summary = run_fits(
            bkg_spec,
            tasks,
            self.settings,
            self.backend,
            self.store,
            cores=self.cores,
            quiet=self.quiet,
            executor=executor,
        )
        self.span.extend((start, time.perf_counter()))
        return summary

    def columns(self, part: _Part) -> dict[str, list[Any]]:
        """Wait for one part's fit; its output columns (status, reason, CLs)."""
        outcome = self.outcome
        results: Iterator[Any] = iter(())
        if part.future is not None:
            summary = part.future.result()
            outcome.fit_time = max(self.span) - min(self.span)
            outcome.workers = max(outcome.workers, summary.workers)
            self._account(summary.batches)
            outcome.fitted += summary.done + summary.failed
            outcome.stored += summary.skipped
            outcome.failed += sum(1 for r in summary.results if not r.ok)
            unsorted: list[Any] = [None] * len(part.order)
            for i, res in zip(part.order, summary.results, strict=True):
                unsorted[i] = res
            results = iter(unsorted)
        return _output_columns(part.analysis.name, part.entries, results, outcome)

    def _account(self, batches: list[tuple[str, int, float, float]]) -> None:
        outcome = self.outcome
        for worker, _, wall, cpu in batches:
            outcome.tasks += 1
            outcome.engine_wall += wall
            outcome.engine_cpu += cpu
            if worker not in self.seen:
                self.seen.add(worker)
                outcome.first_wall += wall


def _output_columns(
    a: str, entries: list[PatchTask | str], results: Iterator[Any], outcome: ScanOutcome
) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {f"{a}.{k}": [] for k in ("status", "reason", "cls_obs")}
    cols.update({f"{a}.cls_exp_{j}": [] for j in range(5)})
    for e in entries:
        if isinstance(e, str):
            outcome.invalid += 1
            status, reason, obs, exp = "invalid", e, math.nan, [math.nan] * 5
        else:
            r = next(results)
            status, reason = r.status, r.reason
            obs = r.cls_obs if r.ok else math.nan
            exp = list(r.cls_exp) if r.ok and r.cls_exp else [math.nan] * 5
        cols[f"{a}.status"].append(status)
        cols[f"{a}.reason"].append(reason)
        cols[f"{a}.cls_obs"].append(obs)
        for j in range(5):
            cols[f"{a}.cls_exp_{j}"].append(exp[j])
    return cols


def cls_table_from_yields(
    table: str | Path,
    out: str | Path,
    analyses: Sequence[YieldAnalysis],
    settings: FitSettings,
    *,
    store: str | Path,
    backend: BackendConfig | None = None,
    cores: int = 1,
    id_column: str | None = None,
    parameters: Sequence[str] = (),
    chunk_rows: int = 4096,
    quiet: bool = False,
) -> ScanOutcome:
    """Stream the yields ``table`` in chunks through :func:`run_fits` and write the CLs table ``out``.

    Every fit is committed to ``store`` as it finishes; rows already there are not refitted.
    ``out`` is written beside itself and renamed into place when complete.
    """
    import pyarrow as pa

    t0 = time.perf_counter()
    path, out = Path(table), Path(out)
    dataset = open_dataset(path)
    id_column = _id_column(path, dataset.schema.names, id_column)
    nrows = _check_table(path, dataset, id_column, parameters, analyses)
    backend = backend or BackendConfig()
    store = Path(store)
    ResultStore(store).close()  # checked (quick_check) once, up front; a corrupt store is moved aside
    outcome = ScanOutcome(rows=nrows)
    fitter = _Fitter(settings, backend, store, cores, str(path), outcome, quiet)
    columns = list(dict.fromkeys([id_column, *parameters, *(c for a in analyses for c in a.columns)]))
    part = out.with_name(f".{out.stem}.part{out.suffix}")
    writer = None
    done = 0
    pending: collections.deque[tuple[int, dict[str, Any], list[_Part]]] = collections.deque()

    def write_oldest() -> None:
        nonlocal writer, done
        n, data, parts = pending.popleft()
        for p in parts:
            for k, v in fitter.columns(p).items():
                kind = pa.string() if k.endswith((".status", ".reason")) else pa.float64()
                data[k] = pa.array(v, type=kind)
        chunk = pa.table(data)
        if writer is None:
            writer = open_writer(part, chunk.schema)
        writer.write_table(chunk)
        done += n
        if not quiet:
            print(
                f"scan: {done}/{nrows} rows; fits: {outcome.fitted} done, {outcome.stored} stored, "
                f"{outcome.failed} failed, {outcome.invalid} invalid; {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    try:
        for batch in iter_batches(path, columns, chunk_rows, dataset):
            rows = {c: batch.column(c).to_pylist() for c in columns}
            rows[id_column] = [None if v is None else str(v) for v in rows[id_column]]
            data: dict[str, Any] = {"name": pa.array(rows[id_column], type=pa.string())}
            for p in parameters:
                data[p] = pa.array(rows[p], type=pa.float64(), from_pandas=False)
            parts = [fitter.submit(a, rows, id_column, parameters, 2 * len(analyses)) for a in analyses]
            pending.append((batch.num_rows, data, parts))
            while len(pending) > 1:  # one chunk fitting while the next one's tasks queue behind it
                write_oldest()
        while pending:
            write_oldest()
    finally:
        if writer is not None:
            writer.close()
        fitter.close()
    os.replace(part, out)
    outcome.cls_path = out
    outcome.wall_time = time.perf_counter() - t0
    if not quiet:
        print(outcome.accounting(), file=sys.stderr, flush=True)
    return outcome


def run_scan(cfg: ScanConfig, *, cores: int = 1, quiet: bool = False) -> ScanOutcome:
    """The whole scan of ``cfg``: CLs per row and analysis (through the runner), then points + summary."""
    t0 = time.perf_counter()
    analyses = load_analyses(cfg)
    backend = _backend_config(cfg.backend, cfg.fit, analyses, cfg.file)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    outcome = cls_table_from_yields(
        cfg.yields,
        cfg.cls_path,
        analyses,
        cfg.fit,
        store=cfg.store_path,
        backend=backend,
        cores=cores,
        id_column=cfg.id_column,
        parameters=cfg.parameters,
        chunk_rows=cfg.chunk_rows,
        quiet=quiet,
    )
    summary = scan_table(
        cfg.cls_path,
        cfg.points_path,
        analyses=[a.name for a in analyses],
        parameters=cfg.parameters,
        pairs=cfg.pairs,
        id_column="name",
        level=cfg.level,
        bins=cfg.bins,
    )
    summary.to_json(cfg.summary_path)
    if cfg.figures:
        from recastfit.scan.figures import plot_scan_summary

        plot_scan_summary(summary, cfg.out_dir / "figures")
    outcome.summary, outcome.points_path, outcome.summary_path = summary, cfg.points_path, cfg.summary_path
    outcome.wall_time = time.perf_counter() - t0
    return outcome
