"""Per-point CLs of several analyses -> best analysis, excluded flag, summary with projections.

:func:`scan_table` streams a table (Parquet/CSV; columns ``<analysis>.cls_obs`` and
``<analysis>.cls_exp_0`` .. ``_4``, optional ``<analysis>.status``) in record batches and writes the
per-point table and a summary with 1D/2D projections; only the needed columns are read and one
batch is held at a time. :func:`results_to_table` merges results.json files into such a table.

"Best" analysis = the lowest median expected CLs (``cls_exp_2``) among the analyses that did not
fail for the point; the point is excluded when that analysis' observed CLs < ``level``. A point
for which every analysis failed is never excluded and is listed in the summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recastfit.errors import InputError
from recastfit.fileio import write_json_atomic
from recastfit.scan.tables import ID_CANDIDATES, iter_batches, open_dataset, open_writer

__all__ = ["ScanSummary", "best_analysis", "detect_analyses", "results_to_table", "scan_table"]


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
        """Write the summary atomically as strict JSON (no NaN: an empty scan's fraction is null)."""
        d = self.to_dict()
        if not self.n_points:
            d["fraction_excluded"] = None
        write_json_atomic(path, d)
        return Path(path)


def _ranges(
    path: Path, dataset: Any, params: Sequence[str], batch_size: int
) -> dict[str, tuple[float, float]]:
    lo = {p: math.inf for p in params}
    hi = {p: -math.inf for p in params}
    for batch in iter_batches(path, list(params), batch_size, dataset):
        for p in params:
            v = batch.column(p).to_numpy(zero_copy_only=False).astype(float)
            v = v[np.isfinite(v)]
            if len(v):
                lo[p], hi[p] = min(lo[p], float(v.min())), max(hi[p], float(v.max()))
    return {p: (lo[p], hi[p] if hi[p] > lo[p] else lo[p] + 1.0) for p in params}


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
    dataset = open_dataset(path)
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
            rng.update(_ranges(path, dataset, todo, batch_size))
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
    for batch in iter_batches(path, columns, batch_size, dataset):
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
                writer = open_writer(Path(out), chunk.schema)
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
    writer = open_writer(out, pa.schema([(k, v.type) for k, v in data_cols.items()]))
    writer.write_table(pa.table(data_cols))
    writer.close()
    return out
