"""The workflow steps behind the Snakemake rules, as plain functions of a :class:`Config` and paths.

fetch -> pallet manifest; patches -> signal PatchSet; fit_part (one share of the points, its own
store) x ``fit.jobs``; gather -> results.sqlite + results.json; contour -> lines, figures, HEPData.
Each step writes its outputs atomically; a point whose fit fails is a ``failed`` result, not a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recastfit.config import Config
from recastfit.errors import ConfigError
from recastfit.fileio import load_json_file, write_json_atomic
from recastfit.manifest import read_manifest
from recastfit.pallet import legacy_patchset, load_json, load_patchset, load_workspace
from recastfit.patches import build_patchset, patchset_tasks
from recastfit.results import PatchTask, digest

__all__ = [
    "fetch_step",
    "read_manifest",
    "signal_patchset",
    "patches_step",
    "part_of",
    "fit_part",
    "gather",
    "newest_row",
    "run_fit_step",
    "contour_step",
    "recast_step",
    "overlay_step",
]


# -- fetch -------------------------------------------------------------------------------------------
def fetch_step(cfg: Config, dest: Path, manifest: Path) -> dict[str, Any]:
    """Fetch (download, verify, extract) the configured pallet into ``dest`` and write its manifest."""
    from recastfit.hepdata import FetchOptions, fetch_pallet
    from recastfit.manifest import write_manifest

    spec = cfg.pallet_spec
    options = FetchOptions.from_settings(
        offline=spec.offline,
        quiet=cfg.quiet,
        cache_dir=spec.cache_dir,
        hepdata_url=spec.hepdata_url,
        doi_url=spec.doi_url,
    )
    folder = fetch_pallet(spec.source, Path(dest), resource=spec.resource, options=options)
    written = write_manifest(Path(manifest), spec.source, folder, spec.analysis)
    if spec.sha256 and written.get("sha256") != spec.sha256:
        Path(manifest).unlink(missing_ok=True)  # nothing downstream may use an unverified pallet
        raise ConfigError(
            cfg.file,
            "pallet.sha256",
            f"the archive's sha256 {spec.sha256}",
            written.get("sha256") or "no archive",
        )
    return written


# -- patches -----------------------------------------------------------------------------------------
def _signal_path(spec_path: Path | None, selected: dict, manifest_key: str, file: str) -> Path:
    raw = spec_path or selected.get(manifest_key)
    if not raw:
        raise ConfigError(file, "signal.path", f"a path (the pallet has no {manifest_key})")
    return Path(raw)


def signal_patchset(cfg: Config, manifest: dict[str, Any]) -> dict:
    """Build the new-signal PatchSet named by ``cfg.signal`` against the fetched workspace.

    ``cfg.signal`` is a :class:`~recastfit.signals.spec.SignalSpec` (or the raw section, parsed
    here); its paths are checked now, relative to the working directory.
    """
    from recastfit.signals.spec import PatchFolderSignal, PatchsetSignal, SignalSpec, parse_signal

    selected = manifest["selected"]
    bkg = load_workspace(Path(selected["workspace"]))
    raw = cfg.signal
    section = raw if not isinstance(raw, SignalSpec) else None
    spec = raw if isinstance(raw, SignalSpec) else None
    if section is not None:
        spec = parse_signal(section, file=cfg.file, parameters=cfg.parameters, base_dir=Path.cwd())
    assert spec is not None
    if isinstance(spec, PatchsetSignal):
        return load_patchset(_signal_path(spec.path, selected, "patchset", cfg.file), bkg)
    if isinstance(spec, PatchFolderSignal):
        return legacy_patchset(
            _signal_path(spec.path, selected, "patch_dir", cfg.file),
            bkg,
            cfg.parameters,
            pattern=cfg.name_pattern,
            analysis_id=cfg.analysis,
        )
    from recastfit.signals.sources import load_signal_points

    found = load_signal_points(spec, bkg_spec=bkg, parameters=cfg.parameters, results_dir=cfg.results_dir)
    for name, reason in found.skipped:
        print(f"recastfit patches: skipped point {name}: {reason}", file=sys.stderr)
    for note in found.notes:
        print(f"recastfit patches: {note}", file=sys.stderr)
    if found.outside_hull:
        print(
            f"recastfit patches: {found.outside_hull} (point, region) efficiencies set to 0 "
            "(the point lies outside that region's efficiency map)",
            file=sys.stderr,
        )
    source = str(getattr(spec, "path", None) or spec.type)
    return build_patchset(
        bkg,
        found.points,
        spec.options,
        parameters=cfg.parameters,
        analysis_id=cfg.analysis,
        source=source,
    )


def patches_step(cfg: Config, manifest: Path, out: Path) -> int:
    """Write the signal PatchSet; returns the number of patches."""
    spec = signal_patchset(cfg, read_manifest(manifest))
    write_json_atomic(out, spec)
    return len(spec.get("patches", []))


# -- fit ---------------------------------------------------------------------------------------------
def part_of(task: PatchTask, parts: int) -> int:
    """The fit job (0 .. parts-1) that owns ``task``: stable, from the patch digest.

    >>> part_of(PatchTask("a", (1.0,), [{"op": "add", "path": "/x", "value": 1}]), 4) in range(4)
    True
    """
    return int(hashlib.sha256(task.key().encode()).hexdigest()[:8], 16) % parts


def _tasks(patchset: Path) -> list[PatchTask]:
    return patchset_tasks(load_json(patchset))


def _fit(cfg: Config, bkg: dict, tasks: Sequence[PatchTask], store: Path, *, cores: int, quiet: bool) -> Any:
    from recastfit.runner import run_fits

    return run_fits(
        bkg,
        tasks,
        cfg.fit,
        cfg.backend_config(),
        store,
        cores=cores,
        quiet=quiet,
        timeout_s=cfg.run.timeout,
        max_memory_mb=cfg.run.max_memory_mb,
    )


def _stored_keys(store: Path, bkg: dict, tasks: Sequence[PatchTask], cfg: Config) -> set[str]:
    """Patch digests already fitted (ok or failed-with-result) in the store at ``store``."""
    if not store.exists():
        return set()
    from recastfit.store import ResultStore

    with ResultStore(store) as db:
        return set(db.get_many(digest(bkg), [t.key() for t in tasks], cfg.fit.key()))


def fit_part(
    cfg: Config,
    manifest: Path,
    patchset: Path,
    *,
    part: int,
    parts: int,
    out: Path,
    cores: int,
    quiet: bool,
) -> dict[str, Any]:
    """Fit this job's share of the points into ``<results>/parts/<part>-of-<parts>.sqlite``.

    Points already in the analysis's results.sqlite are not refitted. ``out`` (JSON) records the
    share's counts; the results themselves stay in the part store until :func:`gather` merges them.
    """
    bkg = load_workspace(Path(read_manifest(manifest)["selected"]["workspace"]))
    mine = [t for t in _tasks(patchset) if part_of(t, parts) == part]
    main_store = cfg.results_dir / "results.sqlite"
    done = _stored_keys(main_store, bkg, mine, cfg)
    todo = [t for t in mine if t.key() not in done]
    part_store = Path(out).with_suffix(".sqlite")
    summary = _fit(cfg, bkg, todo, part_store, cores=cores, quiet=quiet)
    ok = sum(1 for r in summary.results if r.status == "ok")
    record = {
        "part": part,
        "parts": parts,
        "points": len(mine),
        "from_store": len(mine) - len(todo),
        "fitted_now": summary.done + summary.failed,
        "ok": ok,
        "failed": len(todo) - ok,
        "store": part_store.name,
    }
    write_json_atomic(out, record)
    return record


def _merge(dest: Path, sources: Sequence[Path]) -> int:
    """Merge the fit jobs' part stores into ``dest`` (a good row beats an error row); rows taken."""
    from recastfit.store import ResultStore

    with ResultStore(dest) as db:
        return sum(db.merge_from(src) for src in sources if src.exists())


def newest_row(store: Path) -> float:
    """The time the newest row of the SQLite store at ``store`` was written (0 if none/unreadable)."""
    import sqlite3

    if not Path(store).is_file():
        return 0.0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            return float(db.execute("SELECT COALESCE(MAX(created), 0) FROM results").fetchone()[0])
    except (sqlite3.Error, TypeError, ValueError):
        return 0.0


def _export(cfg: Config, store: Path, out: Path, tasks: Sequence[PatchTask], bkg: dict) -> dict[str, Any]:
    """Write ``results.json`` for exactly ``tasks`` from the store (every point, ok or failed)."""
    from recastfit.store import ResultStore

    with ResultStore(store) as db:
        return db.export_results(
            out,
            analysis=cfg.analysis,
            parameters=cfg.parameters,
            units=cfg.units,
            labels=cfg.labels,
            settings=cfg.fit,
            tasks=tasks,
            bkg_spec=bkg,
        )


def gather(cfg: Config, manifest: Path, patchset: Path, parts: Sequence[Path], out: Path) -> str:
    """Merge the part stores into results.sqlite and write ``results.json`` for every point."""

    bkg = load_workspace(Path(read_manifest(manifest)["selected"]["workspace"]))
    tasks = _tasks(patchset)
    store = cfg.results_dir / "results.sqlite"
    marker = cfg.results_dir / "parts" / ".gathered"  # parts older than it ran before the last gather
    last_gather = marker.stat().st_mtime if marker.is_file() else 0.0
    _merge(store, [Path(p).with_suffix(".sqlite") for p in parts])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    doc = _export(cfg, store, out, tasks, bkg)
    records = [load_json_file(p) for p in parts if Path(p).stat().st_mtime > last_gather]
    ok = sum(1 for p in doc["points"] if p["status"] == "ok")
    now = sum(r.get("fitted_now", 0) for r in records)
    line = (
        f"{cfg.analysis}: {len(doc['points'])} points: {ok} ok, {len(doc['points']) - ok} failed; "
        f"{now} fitted now, {len(doc['points']) - now} from the store"
    )
    return line


def run_fit_step(
    cfg: Config, manifest: dict[str, Any], patchset_path: Path, out: Path, *, cores: int, quiet: bool
) -> int:
    """`recastfit fit`: every patch in one process (the CLI path; the workflow fans out instead)."""

    bkg = load_workspace(Path(manifest["selected"]["workspace"]))
    tasks = _tasks(patchset_path)
    store_path = Path(out).parent / "results.sqlite"
    summary = _fit(cfg, bkg, tasks, store_path, cores=cores, quiet=quiet)
    _export(cfg, store_path, out, tasks, bkg)
    if quiet:  # run_fits prints this line itself unless quiet; the summary is always shown once
        print(summary.line(), file=sys.stderr)
    return summary.exit_code


# -- contour -----------------------------------------------------------------------------------------
def contour_step(cfg: Config, results: Path, manifest: Path | None, out_dir: Path) -> str:
    """Lines (contour.json, HEPData YAML), figures and the HEPData submission folder from results.json."""
    from recastfit.contour import draw_contour_files
    from recastfit.submission import hepdata_reference

    record = None
    if manifest is not None and Path(manifest).is_file():
        record = hepdata_reference(read_manifest(Path(manifest)).get("source"))
    written = draw_contour_files(results, out_dir, cfg.contour_options(), hepdata_record=record)
    lines = written.get("lines") if isinstance(written, dict) else None
    return f"{cfg.analysis}: contour written to {out_dir} (lines per kind: {lines})"


# -- recast ------------------------------------------------------------------------------------------
def recast_step(cfg: Config, point: str, workdir: Path, out: Path) -> str:
    """Run the preserved analysis (yadage) for one configured point; write its yields file."""
    from recastfit.signals.recast import run_point
    from recastfit.signals.sources import recast_points, recast_settings

    points = dict(
        recast_points(cfg.signal, config_file=cfg.file, base_dir=Path.cwd(), parameters=cfg.parameters)
    )
    if point not in points:
        raise ConfigError(cfg.file, "signal.points", f"a point named '{point}'", sorted(points)[:5])
    settings = recast_settings(cfg.signal, config_file=cfg.file, base_dir=Path.cwd())
    values = dict(zip(cfg.parameters, points[point], strict=True))
    res = run_point(name=point, values=values, out=out, workdir=workdir, **{**settings, "source": cfg.file})
    return f"{cfg.analysis}: recast {res.name}: {len(res.channels)} channels -> {out}"


# -- overlay -----------------------------------------------------------------------------------------
def overlay_step(run: Any, contours: Sequence[Path], out: Path) -> str:
    """Observed (solid) and expected (dashed) lines of several analyses on one figure."""
    from recastfit.contour import ContourOptions
    from recastfit.plot import draw_overlay

    labels = [c.analysis for c in run.configs]
    title = run.overlay.get("title") or " + ".join(labels)
    draw_overlay(list(contours), labels, out, ContourOptions(title=title))
    return f"overlay of {', '.join(labels)} -> {out}"
