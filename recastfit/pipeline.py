"""The workflow steps behind the Snakemake rules: pallet manifest -> signal PatchSet -> results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recastfit.config import Config
from recastfit.errors import ConfigError, InputError
from recastfit.pallet import legacy_patchset, load_json, load_patchset, load_workspace
from recastfit.patches import build_patchset, patchset_tasks

__all__ = ["read_manifest", "signal_patchset", "run_fit_step", "FAST_BATCH_SIZE"]

FAST_BATCH_SIZE = 256  # default points per task for engine "fast" (pyhf: BackendConfig's default)


def read_manifest(path: Path) -> dict[str, Any]:
    """The fetch step's manifest; ``selected`` names the workspace/patchset/patch folder."""
    manifest = load_json(path)
    selected = manifest.get("selected") if isinstance(manifest, dict) else None
    if not isinstance(selected, dict) or not selected.get("workspace"):
        raise InputError(str(path), "selected.workspace", "missing: re-run the fetch step")
    return manifest


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
        print(f"recastfit patches: skipped point {name}: {reason}")
    for note in found.notes:
        print(f"recastfit patches: {note}")
    if found.outside_hull:
        print(
            f"recastfit patches: {found.outside_hull} (point, region) efficiencies set to 0 "
            "(the point lies outside that region's efficiency map)"
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


def run_fit_step(
    cfg: Config, manifest: dict[str, Any], patchset_path: Path, out: Path, *, cores: int, quiet: bool
) -> int:
    """Fit every patch (skipping those already in the store) and export ``results.json``."""
    from recastfit.backends import BackendConfig
    from recastfit.runner import run_fits
    from recastfit.store import ResultStore

    bkg = load_workspace(Path(manifest["selected"]["workspace"]))
    tasks = patchset_tasks(load_json(patchset_path))
    backend = BackendConfig.from_dict(cfg.backend, file=cfg.file)
    if "batch_size" not in cfg.backend and cfg.fit.engine == "fast":
        backend.batch_size = FAST_BATCH_SIZE  # one compiled call fits many points at once
    store_path = Path(out).parent / "results.sqlite"
    summary = run_fits(bkg, tasks, cfg.fit, backend, store_path, cores=cores, quiet=quiet)
    ResultStore(store_path).export_results(
        out,
        analysis=cfg.analysis,
        parameters=cfg.parameters,
        units=cfg.units,
        labels=cfg.labels,
        settings=cfg.fit,
        tasks=tasks,
        bkg_spec=bkg,
    )
    if quiet:  # run_fits prints this line itself unless quiet; the summary is always shown once
        print(summary.line())
    return summary.exit_code
