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


def _signal_path(cfg: Config, selected: dict, manifest_key: str) -> Path:
    raw = cfg.signal.get("path") or selected.get(manifest_key)
    if not raw:
        raise ConfigError(cfg.file, "signal.path", f"a path (the pallet has no {manifest_key})")
    return Path(raw)


def signal_patchset(cfg: Config, manifest: dict[str, Any]) -> dict:
    """Build the new-signal PatchSet named by ``cfg.signal`` against the fetched workspace."""
    selected = manifest["selected"]
    bkg = load_workspace(Path(selected["workspace"]))
    kind = cfg.signal["type"]
    if kind == "patchset":
        return load_patchset(_signal_path(cfg, selected, "patchset"), bkg)
    if kind == "patch_folder":
        return legacy_patchset(
            _signal_path(cfg, selected, "patch_dir"),
            bkg,
            cfg.parameters,
            pattern=cfg.name_pattern,
            analysis_id=cfg.analysis,
        )
    from recastfit.signals.sources import load_signal_points

    found = load_signal_points(
        cfg.signal,
        config_file=cfg.file,
        base_dir=Path.cwd(),
        bkg_spec=bkg,
        parameters=cfg.parameters,
        results_dir=cfg.results_dir,
    )
    for name, reason in found.skipped:
        print(f"recastfit patches: skipped point {name}: {reason}")
    source = str(cfg.signal.get("path") or cfg.signal["type"])
    return build_patchset(
        bkg,
        found.points,
        cfg.signal_options,
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
    backend = BackendConfig.from_dict(cfg.backend, file=cfg.file)  # batch size: the runner's default
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
