"""What the Snakemake workflow needs from recastfit: loading the config the user gave, running a rule's
step from its ``script:`` and housekeeping (stale locks, outputs the store has outgrown).

No config value ever reaches a shell: every rule is ``script: ../scripts/step.py``, which calls
:func:`run_step` with Snakemake's job object; the step reads names and paths from it as Python values.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recastfit.config import Config, RunConfig, parse_run
from recastfit.errors import ConfigError, RecastfitError
from recastfit.fileio import load_yaml_file, write_json_atomic
from recastfit.pipeline import newest_row

__all__ = [
    "CONFIG_NAME_KEY",
    "load_workflow_config",
    "job_config",
    "run_step",
    "clear_stale_lock",
    "drop_outgrown_results",
    "OWNER_FILE",
]

OWNER_FILE = Path(".snakemake") / "recastfit-owner.json"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


CONFIG_NAME_KEY = "_recastfit_config_file"  # set by workflows/rules/common.smk, read by jobs


def load_workflow_config(
    configfiles: list[str | Path], overrides: Mapping[str, Any], default: str | Path
) -> tuple[RunConfig | Config, str]:
    """The run's config, read by recastfit itself (size-capped, YAML aliases refused), and its name.

    ``configfiles`` are ``--configfile`` arguments (the last one names the run in messages), else
    ``default``; ``overrides`` are ``--config key=value`` pairs, merged on top.
    """
    files = [Path(f) for f in configfiles] or [Path(default)]
    name = str(files[-1])
    data: dict[str, Any] = {}
    for path in files:
        if not path.is_file():
            raise ConfigError(str(path), "<file>", "an existing YAML file")
        loaded = load_yaml_file(path, limit_name="max_config_bytes", what="config file")
        if not isinstance(loaded, dict):
            raise ConfigError(str(path), "<top level>", "a mapping of sections", type(loaded).__name__)
        data = _merge(data, loaded)
    data = _merge(data, dict(overrides))
    return parse_run(data, name, base_dir=Path.cwd()), name


def job_config(config: Mapping[str, Any], name: str, analysis: str | None) -> Config:
    """The analysis's :class:`Config` inside a job (from Snakemake's config mapping)."""
    run = parse_run(dict(config), name, base_dir=Path.cwd())
    if isinstance(run, Config):
        return run
    found = run.by_name()
    if analysis not in found:
        raise ConfigError(name, "analyses", f"an analysis named '{analysis}'", sorted(found))
    return found[analysis]


def _paths(named: Any) -> dict[str, Path]:
    return {k: Path(v) for k, v in named.items() if isinstance(v, str | Path)}


def _dispatch(rule: str, smk: Any, cfg: Config, quiet: bool) -> str:
    from recastfit import pipeline

    out = _paths(smk.output)
    inp = _paths(smk.input)
    threads = int(getattr(smk, "threads", 1) or 1)
    if rule == "demo":
        from recastfit.demo import write_demo

        write_demo(Path(smk.params.folder))
        return f"wrote the demo analysis into {smk.params.folder}"
    if rule == "fetch":
        manifest = pipeline.fetch_step(cfg, Path(smk.params.dest), out["manifest"])
        return f"{cfg.analysis}: pallet {manifest['selected']['workspace']}"
    if rule == "recast":
        return pipeline.recast_step(cfg, smk.wildcards.point, Path(smk.params.workdir), Path(smk.output[0]))
    if rule == "patches":
        n = pipeline.patches_step(cfg, inp["manifest"], Path(smk.output[0]))
        return f"{cfg.analysis}: {n} signal patches"
    if rule == "fit_part":
        part, parts = (int(x) for x in smk.wildcards.part.split("-of-"))
        rec = pipeline.fit_part(
            cfg,
            inp["manifest"],
            inp["patchset"],
            part=part,
            parts=parts,
            out=Path(smk.output[0]),
            cores=threads,
            quiet=quiet,
        )
        return f"{cfg.analysis}: part {part + 1}/{parts}: {json.dumps(rec)}"
    if rule == "gather":
        return pipeline.gather(
            cfg, inp["manifest"], inp["patchset"], [Path(p) for p in smk.input.parts], Path(smk.output[0])
        )
    if rule == "draw_contour":
        return pipeline.contour_step(cfg, inp["results"], inp.get("manifest"), Path(smk.output.json).parent)
    raise RecastfitError(f"no recastfit step for rule '{rule}'")


def run_step(smk: Any) -> None:
    """Entry point of ``workflows/scripts/step.py``: run the job's step, log it, exit 1 on a named error."""
    log = Path(smk.log[0]) if len(smk.log) else None
    config = dict(smk.config)
    name = str(config.pop(CONFIG_NAME_KEY, "config.yaml"))
    quiet = bool(config.get("quiet")) or bool(os.environ.get("RECASTFIT_QUIET"))
    try:
        if smk.rule == "overlay":
            from recastfit import pipeline

            run = parse_run(config, name, base_dir=Path.cwd())
            message = pipeline.overlay_step(run, [Path(p) for p in smk.input], Path(smk.output[0]))
        else:
            analysis = smk.wildcards.get("analysis") or getattr(smk.params, "analysis", None)
            cfg = job_config(config, name, analysis)
            message = _dispatch(smk.rule, smk, cfg, quiet)
    except RecastfitError as exc:
        _log(log, f"recastfit {smk.rule}: error: {exc}")
        print(f"recastfit {smk.rule}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    _log(log, f"recastfit {smk.rule}: {message}")
    print(f"recastfit {smk.rule}: {message}", file=sys.stderr)


def _log(log: Path | None, line: str) -> None:
    if log is None:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(line + "\n")


# -- housekeeping at parse time ----------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_lock(workdir: Path = Path(".")) -> bool:
    """Remove Snakemake's locks when the run that took them is dead (e.g. after ``kill -9``).

    Each run records its pid here; a later run finding locks whose owner no longer exists removes them,
    so the README command alone resumes. Locks of a live run are left alone. Returns True if removed.
    """
    owner = workdir / OWNER_FILE
    locks = workdir / ".snakemake" / "locks"
    removed = False
    if locks.is_dir() and any(locks.iterdir()) and owner.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(owner.read_text())["pid"])
            if pid != os.getpid() and not _alive(pid):
                for lock in locks.iterdir():
                    lock.unlink()
                removed = True
    owner.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(owner, {"pid": os.getpid(), "started": time.time()})
    return removed


def drop_outgrown_results(results_dir: Path) -> bool:
    """Delete ``results.json`` when a store holds points fitted after it was written.

    A run killed between fitting and gathering leaves results in results.sqlite or the part stores
    that results.json lacks; Snakemake would otherwise say "Nothing to be done" and keep the old
    contour (a missing intermediate file alone does not make it rerun anything). Removing
    results.json and the contour files derived from it makes the next run gather (nothing is
    refitted) and redraw. Returns True when they were removed.
    """
    results = results_dir / "results.json"
    if not results.is_file():
        return False
    written = results.stat().st_mtime
    stores = [results_dir / "results.sqlite", *sorted((results_dir / "parts").glob("*.sqlite"))]
    if any(store.is_file() and newest_row(store) > written for store in stores):
        for derived in [results, *results_dir.glob("contour.*")]:
            derived.unlink(missing_ok=True)
        overlay = results_dir.parent / "overlay.png"
        overlay.unlink(missing_ok=True)
        return True
    return False
