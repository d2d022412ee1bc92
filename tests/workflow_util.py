"""Running the real `snakemake` command of the README in a fresh workflow folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from recastfit.cli.init import init_workflow

__all__ = ["new_workflow", "copy_workflow", "run_snakemake", "SNAKEMAKE"]

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def new_workflow(path: Path) -> Path:
    """A folder as `recastfit init` writes it (Snakefile, workflows/, specs/, profiles link)."""
    init_workflow(path)
    return path


def copy_workflow(src: Path, dst: Path) -> Path:
    """A copy of a workflow folder that already ran (results, store, `.snakemake` records, times kept).

    Snakemake sees the copy as up to date, so a test that changes one input reruns only what that
    input feeds: the shared demo run costs one real run per session instead of one per test.
    """
    shutil.copytree(src, dst, symlinks=True)
    return dst


def run_snakemake(
    workdir: Path,
    *args: str,
    config: dict[str, Any] | None = None,
    cores: int = 2,
    target: str = "contour",
    ok: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`snakemake --cores N contour [--configfile cfg.yaml] ARGS` in ``workdir``; asserts the exit code."""
    cmd = [*SNAKEMAKE, "--cores", str(cores), target, *args]
    if config is not None:
        (workdir / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        cmd += ["--configfile", "cfg.yaml"]
    env = {**os.environ, "RECASTFIT_QUIET": "1"}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
