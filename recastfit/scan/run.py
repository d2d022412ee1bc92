"""Running a yields scan through the runner: rows in chunks -> :func:`recastfit.runner.run_fits` -> CLs table.

The one fit path: every hypothesis test goes through :func:`~recastfit.runner.run_fits` with
the configured back end and the SQLite store ``<out>/results.sqlite``, so a scan killed at any
moment (even ``kill -9``) resumes where it stopped: rows already stored are read back, only
the missing ones are fitted. Rows are read ``chunk_rows`` at a time; only one chunk's patches
are held in memory. One back end (one worker pool, its compiled engines) serves every chunk and
analysis of a scan (:class:`SharedBackend`).

Output: ``cls.parquet`` (per row and analysis: status, reason, cls_obs, cls_exp_0..4), then
``points.parquet`` and ``summary.json`` from :func:`recastfit.scan.summary.scan_table`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
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
from recastfit.runner import run_fits
from recastfit.scan.config import ScanConfig
from recastfit.scan.summary import ScanSummary, scan_table
from recastfit.scan.tables import ID_CANDIDATES, check_numeric, iter_batches, open_dataset, open_writer
from recastfit.scan.tasks import YieldAnalysis, signal_size, tasks_from_rows
from recastfit.store import ResultStore

__all__ = ["FAST_BATCH_SIZE", "ScanOutcome", "SharedBackend", "cls_table_from_yields", "run_scan"]

FAST_BATCH_SIZE = 256  # points per task with the fast engine (one compiled call fits them at once)


class SharedBackend:
    """One back end kept open across many :func:`run_fits` calls (chunks x analyses of one scan).

    ``run_fits`` enters and leaves its executor per call; this wrapper ignores those shutdowns
    (call :meth:`close` at the end) so worker processes, their cached backgrounds and compiled
    engines survive from chunk to chunk. The first background goes out through the back end's
    own :meth:`~recastfit.backends.base.Backend.ship_background`; later ones (other analyses)
    ride with the first task each worker gets (the runner's missing-background protocol), since
    re-shipping would restart a local pool. Every other attribute and method (``submit``,
    ``workers``, ``slots``, ``payload_bytes``, budgets, ...) is the wrapped back end's own: the
    wrapper is a delegate, not a subclass, so it follows the back-end interface as it evolves.
    """

    def __init__(self, make: Callable[[], Backend]) -> None:
        self._inner = make()
        self._refs: dict[str, BkgRef] = {}
        self.eager_ship = 0
        self._started = False

    def __getattr__(self, attr: str) -> Any:  # only called for attributes not defined here
        return getattr(self.__dict__["_inner"], attr)

    def start(self) -> None:
        if not self._started:
            self._inner.start()
            self._started = True

    def __enter__(self) -> SharedBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Kept open: the scan closes the shared back end itself (:meth:`close`)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Ignored, as :meth:`__exit__`."""

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        if bkg_digest in self._refs:
            self.eager_ship = 0
            return self._refs[bkg_digest]
        if not self._refs:
            ref = self._inner.ship_background(spec, bkg_digest)
            self.eager_ship = self._inner.eager_ship
        else:
            ref = BkgRef(bkg_digest)
            self.eager_ship = self._inner.workers
        self._refs[bkg_digest] = ref
        return ref

    def close(self) -> None:
        """Stop the wrapped back end's workers."""
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
    summary: ScanSummary | None = None
    cls_path: Path | None = None
    points_path: Path | None = None
    summary_path: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.invalid else 0

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


def _backend_config(cfg_backend: dict[str, Any], settings: FitSettings, file: str) -> BackendConfig:
    backend = BackendConfig.from_dict(cfg_backend, file=file)
    if "batch_size" not in cfg_backend and settings.engine == "fast":
        backend = dataclasses.replace(backend, batch_size=FAST_BATCH_SIZE)
    return backend


@dataclass
class _Fitter:
    """Fits chunks of rows through :func:`run_fits`, one shared back end for the whole scan."""

    settings: FitSettings
    backend: BackendConfig
    store: Path
    cores: int
    source: str
    outcome: ScanOutcome
    quiet: bool = False
    shared: SharedBackend | None = None

    def executor(self) -> SharedBackend:
        if self.shared is None:
            self.shared = SharedBackend(lambda: make_executor(self.backend, self.cores))
        return self.shared

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()

    def columns(
        self, analysis: YieldAnalysis, rows: dict[str, list[Any]], id_column: str, parameters: Sequence[str]
    ) -> dict[str, list[Any]]:
        """Fit one analysis on one chunk of rows; its output columns (status, reason, CLs)."""
        entries = tasks_from_rows(
            rows, analysis, id_column=id_column, parameters=parameters, source=self.source
        )
        tasks = [e for e in entries if isinstance(e, PatchTask)]
        outcome = self.outcome
        results: Iterator[Any] = iter(())
        if tasks:
            order = sorted(range(len(tasks)), key=lambda i: signal_size(tasks[i]))
            summary = run_fits(
                analysis.bkg_spec,
                [tasks[i] for i in order],
                self.settings,
                self.backend,
                self.store,
                cores=self.cores,
                quiet=self.quiet,
                executor=self.executor(),
            )
            outcome.fitted += summary.done + summary.failed
            outcome.stored += summary.skipped
            outcome.failed += sum(1 for r in summary.results if not r.ok)
            unsorted: list[Any] = [None] * len(tasks)
            for i, res in zip(order, summary.results, strict=True):
                unsorted[i] = res
            results = iter(unsorted)
        return _output_columns(analysis.name, entries, results, outcome)


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
    try:
        for batch in iter_batches(path, columns, chunk_rows, dataset):
            rows = {c: batch.column(c).to_pylist() for c in columns}
            rows[id_column] = [None if v is None else str(v) for v in rows[id_column]]
            data: dict[str, Any] = {"name": pa.array(rows[id_column], type=pa.string())}
            for p in parameters:
                data[p] = pa.array(rows[p], type=pa.float64(), from_pandas=False)
            for a in analyses:
                cols = fitter.columns(a, rows, id_column, parameters)
                for k, v in cols.items():
                    kind = pa.string() if k.endswith((".status", ".reason")) else pa.float64()
                    data[k] = pa.array(v, type=kind)
            chunk = pa.table(data)
            if writer is None:
                writer = open_writer(part, chunk.schema)
            writer.write_table(chunk)
            done += batch.num_rows
            if not quiet:
                print(
                    f"scan: {done}/{nrows} rows; fits: {outcome.fitted} done, {outcome.stored} stored, "
                    f"{outcome.failed} failed, {outcome.invalid} invalid; {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if writer is not None:
            writer.close()
        fitter.close()
    os.replace(part, out)
    outcome.cls_path = out
    outcome.wall_time = time.perf_counter() - t0
    return outcome


def run_scan(cfg: ScanConfig, *, cores: int = 1, quiet: bool = False) -> ScanOutcome:
    """The whole scan of ``cfg``: CLs per row and analysis (through the runner), then points + summary."""
    t0 = time.perf_counter()
    analyses = load_analyses(cfg)
    backend = _backend_config(cfg.backend, cfg.fit, cfg.file)
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
