"""Shared fixtures: where ``../shared`` is, and skipping cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RECASTFIT_SHARED", ROOT.parent / "shared"))
STAU_DIR = SHARED / "data" / "pallets" / "ATLAS-SUSY-2018-04-staus"
ERJR_DIR = SHARED / "data" / "pallets" / "3L-eRJR"
XSEC_DIR = SHARED / "data" / "xsec"


def need_shared(path: Path = SHARED) -> Path:
    """Return ``path`` or skip the test with a message naming what is missing."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set RECASTFIT_SHARED to ../shared)")
    return path


@pytest.fixture(scope="session")
def demo_workflow(tmp_path_factory) -> Path:
    """`recastfit init` + the README's `snakemake --cores 2 contour` (offline demo, 54 pyhf fits), run
    once per session. Treat it as read-only: tests that change inputs work on
    `tests.workflow_util.copy_workflow(demo_workflow, tmp_path / "wf")`."""
    from tests.workflow_util import new_workflow, run_snakemake

    wf = new_workflow(tmp_path_factory.mktemp("demo_workflow"))
    run_snakemake(wf)
    return wf


@pytest.fixture
def stau_dir() -> Path:
    return need_shared(STAU_DIR)


@pytest.fixture
def erjr_dir() -> Path:
    return need_shared(ERJR_DIR)


@pytest.fixture
def xsec_dir() -> Path:
    return need_shared(XSEC_DIR)
