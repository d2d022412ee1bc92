"""Scan mode (pMSSM-style): per-point CLs of several analyses -> best analysis, excluded flag, summary.

Layered: (1) :func:`scan_table` streams a table (Parquet/CSV; columns ``<analysis>.cls_obs`` and
``<analysis>.cls_exp_0`` .. ``_4``, optional ``<analysis>.status``) in record batches and writes the
per-point table and a summary with 1D/2D projections; only the needed columns are read and one
batch is held at a time. (2) :func:`cls_table_from_yields` turns a table of signal yields into
those CLs columns by building one patch per row and analysis and calling
:func:`recastfit.infer.hypotest_batch`. :func:`results_to_table` merges results.json files.

"Best" analysis = the lowest median expected CLs (``cls_exp_2``) among the analyses that did not
fail for the point; the point is excluded when that analysis' observed CLs < ``level``. A point
for which every analysis failed is never excluded and is listed in the summary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recastfit.errors import InputError

__all__ = [
    "ScanSummary",
    "detect_analyses",
    "best_analysis",
    "scan_table",
    "results_to_table",
    "YieldAnalysis",
    "tasks_from_rows",
    "cls_table_from_yields",
]

ID_CANDIDATES = ("name", "id", "point", "point_id")


def _fmt(path: Path) -> str:
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    if suffix.endswith((".parquet", ".pq")) or path.is_dir():
        return "parquet"
    raise InputError(str(path), None, "expected a .parquet or .csv table")


def _dataset(path: Path) -> Any:
    import pyarrow.dataset as ds

    if not path.exists():
        raise InputError(str(path), None, "scan table not found")
    return ds.dataset(str(path), format=_fmt(path))


def detect_analyses(columns: Sequence[str]) -> list[str]:
    """Analysis names having a ``<analysis>.cls_obs`` and a ``<analysis>.cls_exp_2`` column."""
    cols = set(columns)
    return [
        c[: -len(".cls_obs")]
        for c in columns
        if c.endswith(".cls_obs") and c[: -len(".cls_obs")] + ".cls_exp_2" in cols
    ]


def _float(batch: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    col = batch.get(name)
    if col is None:
        return np.full(n, np.nan)
    return (
        np.asarray(col, dtype=float)
        if not hasattr(col, "to_numpy")
        else np.asarray(col.to_numpy(zero_copy_only=False), dtype=float)
    )


def _status_ok(status: Any) -> np.ndarray:
    """True where the status is "ok" or missing (null)."""
    if hasattr(status, "to_numpy"):
        import pyarrow as pa
        import pyarrow.compute as pc

        st = pc.cast(status, pa.string())
        return pc.fill_null(pc.equal(st, "ok"), True).to_numpy(zero_copy_only=False).astype(bool)
    st = np.asarray(status, dtype=object)
    return np.array([v is None or v == "ok" for v in st], dtype=bool)


def best_analysis(
    batch: Mapping[str, Any], analyses: Sequence[str], level: float = 0.05
) -> dict[str, np.ndarray]:
    """Per row: ``best`` index (-1 if all failed), ``best_cls_obs``, ``best_cls_exp``, ``excluded``,
    ``failed``, and per analysis ``valid``/``excluded`` matrices (rows x analyses).

    ``batch`` maps column names to arrays (a dict of numpy arrays or a pyarrow RecordBatch as dict).
    """
    n = len(next(iter(batch.values())))
    obs = np.stack([_float(batch, f"{a}.cls_obs", n) for a in analyses], axis=1)
    exp = np.stack([_float(batch, f"{a}.cls_exp_2", n) for a in analyses], axis=1)
    valid = np.isfinite(obs) & np.isfinite(exp)
    for k, a in enumerate(analyses):
        status = batch.get(f"{a}.status")
        if status is not None:
            valid[:, k] &= _status_ok(status)
    failed = ~valid.any(axis=1)
    best = np.argmin(np.where(valid, exp, np.inf), axis=1)
    rows = np.arange(n)
    best_obs = np.where(failed, np.nan, obs[rows, best])
    best_exp = np.where(failed, np.nan, exp[rows, best])
    with np.errstate(invalid="ignore"):
        per_excl = valid & (obs < level)
        excluded = ~failed & (best_obs < level)
    return {
        "best": np.where(failed, -1, best),
        "best_cls_obs": best_obs,
        "best_cls_exp": best_exp,
        "excluded": excluded,
        "failed": failed,
        "valid": valid,
        "analysis_excluded": per_excl,
        "obs": obs,
        "exp": exp,
    }


@dataclass
class ScanSummary:
    """Counts over the whole scan and histograms of the excluded fraction per chosen parameter."""

    n_points: int = 0
    n_failed: int = 0
    n_excluded: int = 0
    level: float = 0.05
    analyses: dict[str, dict[str, int]] = field(default_factory=dict)
    failed_points: list[str] = field(default_factory=list)
    projections_1d: dict[str, dict[str, list]] = field(default_factory=dict)
    projections_2d: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def fraction_excluded(self) -> float:
        return self.n_excluded / self.n_points if self.n_points else math.nan

    def to_dict(self) -> dict[str, Any]:
        ok = self.n_points - self.n_failed
        return {
            "n_points": self.n_points,
            "n_failed": self.n_failed,
            "n_excluded": self.n_excluded,
            "fraction_excluded": self.fraction_excluded,
            "fraction_excluded_of_ok": self.n_excluded / ok if ok else None,
            "level": self.level,
            "analyses": self.analyses,
            "failed_points": self.failed_points,
            "projections_1d": self.projections_1d,
            "projections_2d": self.projections_2d,
        }

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def _ranges(dataset: Any, params: Sequence[str], batch_size: int) -> dict[str, tuple[float, float]]:
    lo = {p: math.inf for p in params}
    hi = {p: -math.inf for p in params}
    for batch in dataset.to_batches(columns=list(params), batch_size=batch_size):
        for p in params:
            v = batch.column(p).to_numpy(zero_copy_only=False).astype(float)
            v = v[np.isfinite(v)]
            if len(v):
                lo[p], hi[p] = min(lo[p], float(v.min())), max(hi[p], float(v.max()))
    return {p: (lo[p], hi[p] if hi[p] > lo[p] else lo[p] + 1.0) for p in params}


def _open_writer(out: Path, schema: Any) -> Any:
    out.parent.mkdir(parents=True, exist_ok=True)
    if _fmt(out) == "csv":
        import pyarrow.csv as pcsv

        return pcsv.CSVWriter(str(out), schema)
    import pyarrow.parquet as pq

    return pq.ParquetWriter(str(out), schema)


def _iter_input(path: Path, columns: list[str], batch_size: int) -> Iterator[Any]:
    yield from _dataset(path).to_batches(columns=columns, batch_size=batch_size)


def scan_table(
    table: str | Path,
    out: str | Path | None = None,
    *,
    analyses: Sequence[str] | None = None,
    parameters: Sequence[str] = (),
    pairs: Sequence[tuple[str, str]] | None = None,
    id_column: str | None = None,
    level: float = 0.05,
    bins: int = 20,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    batch_size: int = 50_000,
) -> ScanSummary:
    """Stream ``table`` and write the per-point table ``out`` (Parquet or CSV by suffix).

    ``parameters``: columns to project (1D histograms of total/excluded counts, ``bins`` bins over
    ``ranges`` or the data range found by a first pass over these columns only); ``pairs``: 2D
    projections (default: the first two parameters). Output columns: the id, the parameters,
    ``<a>.cls_obs``, ``<a>.cls_exp_2`` (NaN where that analysis failed), ``<a>.excluded`` per
    analysis, ``best_analysis``, ``best_cls_obs``, ``best_cls_exp``, ``excluded``, ``failed``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(table)
    dataset = _dataset(path)
    names = dataset.schema.names
    analyses = list(analyses) if analyses else detect_analyses(names)
    if not analyses:
        raise InputError(
            str(path), "columns", "expected '<analysis>.cls_obs' and '<analysis>.cls_exp_2' columns"
        )
    missing = [c for a in analyses for c in (f"{a}.cls_obs", f"{a}.cls_exp_2") if c not in names]
    missing += [p for p in parameters if p not in names]
    if missing:
        raise InputError(str(path), "columns", f"missing {missing}; the table has {names}")
    if id_column is None:
        id_column = next((c for c in ID_CANDIDATES if c in names), None)
    elif id_column not in names:
        raise InputError(str(path), "columns", f"no id column '{id_column}'; the table has {names}")
    params = list(parameters)
    pairs = list(pairs) if pairs is not None else ([(params[0], params[1])] if len(params) >= 2 else [])
    edges = {}
    if params:
        rng = dict(ranges or {})
        todo = [p for p in params if p not in rng]
        if todo:
            rng.update(_ranges(dataset, todo, batch_size))
        edges = {p: np.linspace(rng[p][0], rng[p][1], bins + 1) for p in params}
    h1 = {p: [np.zeros(bins, np.int64), np.zeros(bins, np.int64)] for p in params}
    h2 = {pq_: [np.zeros((bins, bins), np.int64), np.zeros((bins, bins), np.int64)] for pq_ in pairs}
    status_cols = [f"{a}.status" for a in analyses if f"{a}.status" in names]
    columns = ([id_column] if id_column else []) + [p for p in params if p != id_column]
    columns += [f"{a}.{k}" for a in analyses for k in ("cls_obs", "cls_exp_2")] + status_cols
    summary = ScanSummary(
        level=level,
        analyses={
            a: dict.fromkeys(("n_valid", "n_failed", "n_excluded", "n_best", "n_excluded_as_best"), 0)
            for a in analyses
        },
    )
    writer = None
    offset = 0
    labels_ = [*analyses, ""]
    for batch in _iter_input(path, columns, batch_size):
        n = batch.num_rows
        cols = {name: batch.column(name) for name in batch.schema.names}
        r = best_analysis(cols, analyses, level)
        ids = (
            pc.cast(cols[id_column], pa.string())
            if id_column
            else pa.array(np.arange(offset, offset + n).astype(str))
        )
        summary.n_points += n
        summary.n_failed += int(r["failed"].sum())
        summary.n_excluded += int(r["excluded"].sum())
        if r["failed"].any():
            summary.failed_points.extend(ids.filter(pa.array(r["failed"])).to_pylist())
        for k, a in enumerate(analyses):
            s = summary.analyses[a]
            s["n_valid"] += int(r["valid"][:, k].sum())
            s["n_failed"] += int((~r["valid"][:, k]).sum())
            s["n_excluded"] += int(r["analysis_excluded"][:, k].sum())
            s["n_best"] += int((r["best"] == k).sum())
            s["n_excluded_as_best"] += int(((r["best"] == k) & r["excluded"]).sum())
        pv = {p: _float(cols, p, n) for p in params}
        for p in params:
            h1[p][0] += np.histogram(pv[p], edges[p])[0]
            h1[p][1] += np.histogram(pv[p][r["excluded"]], edges[p])[0]
        for a_, b_ in pairs:
            h2[(a_, b_)][0] += np.histogram2d(pv[a_], pv[b_], [edges[a_], edges[b_]])[0].astype(np.int64)
            ex = r["excluded"]
            h2[(a_, b_)][1] += np.histogram2d(pv[a_][ex], pv[b_][ex], [edges[a_], edges[b_]])[0].astype(
                np.int64
            )
        if out is not None:
            data: dict[str, Any] = {id_column or "id": ids}
            for p in params:
                data[p] = pa.array(pv[p])
            for k, a in enumerate(analyses):
                data[f"{a}.cls_obs"] = pa.array(np.where(r["valid"][:, k], r["obs"][:, k], np.nan))
                data[f"{a}.cls_exp_2"] = pa.array(np.where(r["valid"][:, k], r["exp"][:, k], np.nan))
                data[f"{a}.excluded"] = pa.array(r["analysis_excluded"][:, k])
            data["best_analysis"] = pa.DictionaryArray.from_arrays(
                pa.array(np.where(r["best"] < 0, len(analyses), r["best"]).astype(np.int32)),
                pa.array(labels_),
            ).cast(pa.string())
            data["best_cls_obs"] = pa.array(r["best_cls_obs"])
            data["best_cls_exp"] = pa.array(r["best_cls_exp"])
            data["excluded"] = pa.array(r["excluded"])
            data["failed"] = pa.array(r["failed"])
            chunk = pa.table(data)
            if writer is None:
                writer = _open_writer(Path(out), chunk.schema)
            writer.write_table(chunk)
        offset += n
    if writer is not None:
        writer.close()
    for p in params:
        tot, exc = h1[p]
        summary.projections_1d[p] = {
            "edges": edges[p].tolist(),
            "total": tot.tolist(),
            "excluded": exc.tolist(),
            "fraction": [e / t if t else None for e, t in zip(exc.tolist(), tot.tolist(), strict=True)],
        }
    for (a_, b_), (tot, exc) in h2.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(tot > 0, exc / np.maximum(tot, 1), np.nan)
        summary.projections_2d[f"{a_}:{b_}"] = {
            "x": a_,
            "y": b_,
            "xedges": edges[a_].tolist(),
            "yedges": edges[b_].tolist(),
            "total": tot.tolist(),
            "excluded": exc.tolist(),
            "fraction": [[None if math.isnan(v) else v for v in row] for row in frac.tolist()],
        }
    return summary


def results_to_table(results: Sequence[str | Path | Mapping[str, Any]], out: str | Path) -> Path:
    """Merge results.json files (one per analysis) by point name into a CLs table (Parquet/CSV).

    Columns: ``name``, the grid parameters, ``<analysis>.cls_obs``, ``.cls_exp_0`` .. ``_4``,
    ``.status``; a point missing from one analysis gets status ``missing`` and NaN CLs there.
    """
    import pyarrow as pa

    from recastfit.contour import load_results

    rows: dict[str, dict[str, Any]] = {}
    analyses: list[str] = []
    for item in results:
        data, source = load_results(item)
        name = str(data.get("analysis") or Path(source).parent.name or f"analysis{len(analyses)}")
        if name in analyses:
            raise InputError(source, "analysis", f"analysis '{name}' given twice")
        analyses.append(name)
        params = list(data.get("parameters") or [])
        for i, p in enumerate(data.get("points") or []):
            if "name" not in p:
                raise InputError(source, f"points[{i}].name", "expected a point name to merge on")
            row = rows.setdefault(str(p["name"]), {})
            for k, v in zip(params, p.get("values") or [], strict=False):
                row.setdefault(k, float(v))
            ok = p.get("status") == "ok" and p.get("cls_obs") is not None and p.get("cls_exp")
            row[f"{name}.status"] = p.get("status", "failed") if not ok else "ok"
            row[f"{name}.cls_obs"] = float(p["cls_obs"]) if ok else math.nan
            for j in range(5):
                row[f"{name}.cls_exp_{j}"] = float(p["cls_exp"][j]) if ok else math.nan
    names = sorted(rows)
    keys: list[str] = []
    for r in rows.values():
        keys.extend(k for k in r if k not in keys)
    data_cols: dict[str, Any] = {"name": pa.array(names)}
    for k in keys:
        if k.endswith(".status"):
            data_cols[k] = pa.array([rows[n].get(k, "missing") for n in names])
        else:
            data_cols[k] = pa.array([rows[n].get(k, math.nan) for n in names], type=pa.float64())
    out = Path(out)
    writer = _open_writer(out, pa.schema([(k, v.type) for k, v in data_cols.items()]))
    writer.write_table(pa.table(data_cols))
    writer.close()
    return out


# ---- layer 2: yields -> patches -> hypothesis tests -------------------------------------------


@dataclass(frozen=True)
class YieldAnalysis:
    """One analysis of a yields scan: its background workspace and column -> (channel, bin)."""

    name: str
    bkg_spec: dict
    columns: Mapping[str, tuple[str, int]]


def tasks_from_rows(
    rows: Mapping[str, Sequence[Any]],
    analysis: YieldAnalysis,
    *,
    id_column: str,
    parameters: Sequence[str] = (),
    options: Any = None,
    source: str = "scan table",
) -> list[Any]:
    """One :class:`~recastfit.results.PatchTask` per row: the yields in ``analysis.columns`` placed
    into their (channel, bin); bins with no column get 0. Patches come from
    :func:`recastfit.patches.build_patch` (signal sample with the POI normfactor and lumi)."""
    from recastfit.patches import SignalOptions, build_patch
    from recastfit.results import PatchTask
    from recastfit.signals.model import ChannelYields, PointYields

    nbins = {c["name"]: len(c["samples"][0]["data"]) for c in analysis.bkg_spec["channels"]}
    for col, (ch, b) in analysis.columns.items():
        if ch not in nbins or not 0 <= int(b) < nbins[ch]:
            raise InputError(
                source,
                f"{analysis.name}.columns.{col}",
                f"expected a (channel, bin) of the workspace {nbins}, got {(ch, b)!r}",
            )
        if col not in rows:
            raise InputError(source, col, f"column missing (needed by analysis '{analysis.name}')")
    n = len(rows[id_column])
    tasks = []
    for i in range(n):
        chans: dict[str, list[float]] = {}
        for col, (ch, b) in analysis.columns.items():
            chans.setdefault(ch, [0.0] * nbins[ch])[int(b)] = float(rows[col][i])
        point = PointYields(
            str(rows[id_column][i]),
            tuple(float(rows[p][i]) for p in parameters),
            {ch: ChannelYields(tuple(v)) for ch, v in chans.items()},
        )
        patch = build_patch(analysis.bkg_spec, point, options or SignalOptions(), source=source)
        tasks.append(PatchTask(point.name, point.values, patch))
    return tasks


def cls_table_from_yields(
    table: str | Path,
    out: str | Path,
    analyses: Sequence[YieldAnalysis],
    settings: Any,
    *,
    id_column: str = "name",
    parameters: Sequence[str] = (),
    batch_size: int = 1000,
) -> Path:
    """Stream a yields table, run the hypothesis tests per batch and analysis
    (:func:`recastfit.infer.hypotest_batch`) and write the CLs table that :func:`scan_table` reads."""
    import pyarrow as pa

    from recastfit.infer import hypotest_batch

    path = Path(table)
    columns = list(dict.fromkeys([id_column, *parameters, *(c for a in analyses for c in a.columns)]))
    names = _dataset(path).schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(str(path), "columns", f"missing {missing}; the table has {names}")
    writer = None
    for batch in _iter_input(path, columns, batch_size):
        rows = {c: batch.column(c).to_pylist() for c in columns}
        data: dict[str, Any] = {id_column: pa.array([str(v) for v in rows[id_column]])}
        for p in parameters:
            data[p] = pa.array(rows[p], type=pa.float64())
        for a in analyses:
            results = hypotest_batch(
                a.bkg_spec,
                tasks_from_rows(rows, a, id_column=id_column, parameters=parameters, source=str(path)),
                settings,
            )
            data[f"{a.name}.status"] = pa.array([r.status for r in results])
            data[f"{a.name}.cls_obs"] = pa.array(
                [r.cls_obs if r.ok else math.nan for r in results], type=pa.float64()
            )
            for j in range(5):
                data[f"{a.name}.cls_exp_{j}"] = pa.array(
                    [r.cls_exp[j] if r.ok else math.nan for r in results], type=pa.float64()
                )
        chunk = pa.table(data)
        if writer is None:
            writer = _open_writer(Path(out), chunk.schema)
        writer.write_table(chunk)
    if writer is None:
        raise InputError(str(path), None, "the yields table has no rows")
    writer.close()
    return Path(out)
