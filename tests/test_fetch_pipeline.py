"""Issue 3 end to end: `snakemake --cores 2 contour` whose pallet is a HEPData DOI, served by the
local HEPData look-alike; the fetch step downloads, caches, verifies and extracts it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recastfit import demo
from recastfit.cli import main
from recastfit.hepdata import sha256_file
from recastfit.signals import write_yields_file
from tests.hepdata_server import HEPDataServer, make_tar_gz

ROOT = Path(__file__).resolve().parent.parent
GRID = [(float(m1), float(m2)) for m1 in (500, 600, 700, 800) for m2 in (0, 200, 400) if m2 < m1]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECASTFIT_QUIET": "1"}
    for var in ("RECASTFIT_HEPDATA_URL", "RECASTFIT_DOI_URL", "RECASTFIT_CACHE_DIR"):
        env.pop(var, None)  # the config alone must point the fetch step at the server
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "contour", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_snakemake_contour_with_hepdata_doi(tmp_path):
    if not (ROOT / "Snakefile").exists() or not (ROOT / "workflows" / "Snakefile").exists():
        pytest.skip("the workflow (Snakefile, workflows/) is not in this checkout")
    workdir = tmp_path / "wf"
    workdir.mkdir()
    shutil.copy(ROOT / "Snakefile", workdir / "Snakefile")
    shutil.copytree(ROOT / "workflows", workdir / "workflows", ignore=shutil.ignore_patterns("__pycache__"))

    # the demo analysis as a published pallet: a tar.gz on the server; only the yields stay local,
    # on a 12-point sub-grid that still brackets the exclusion edge (m_parent 600-700 GeV)
    paths = demo.write_demo(workdir / "demo")
    write_yields_file(paths["yields"], demo.demo_points(GRID), demo.PARAMETERS)
    archive = make_tar_gz(
        tmp_path / "demo-likelihoods.tar.gz", {"demo-likelihoods": paths["workspace"].parent}
    )
    shutil.rmtree(paths["workspace"].parent)

    with HEPDataServer(tmp_path, pallets={"demo-likelihoods.tar.gz": archive}, recid=12345) as srv:
        doi = srv.doi("demo-likelihoods.tar.gz")
        assert doi == "10.17182/hepdata.12345.v1/r1"
        config = yaml.safe_load((workdir / "workflows" / "config" / "config.yaml").read_text())
        config["demo"] = None
        config["pallet"] = {
            "source": doi,
            "hepdata_url": srv.url,
            "doi_url": srv.doi_url,
            "cache_dir": str(tmp_path / "cache"),
        }
        (workdir / "cfg.yaml").write_text(yaml.safe_dump(config))
        snakemake(workdir, "--configfile", "cfg.yaml")
        assert srv.count("landing_page=true") == 1
        assert "application/x-tar" in next(h for p, h in srv.requests if "landing_page" in p)["Accept"]

    out = workdir / "results" / "demo"
    manifest = json.loads((out / "pallet.json").read_text())
    assert manifest["source"] == doi
    assert manifest["sha256"] == sha256_file(archive)
    assert manifest["selected"]["workspace"] == str(out / "pallet" / "demo-likelihoods" / "BkgOnly.json")
    results = json.loads((out / "results.json").read_text())
    assert sorted(tuple(p["values"]) for p in results["points"]) == sorted(GRID)
    assert len(results["points"]) == 12
    assert all(p["status"] == "ok" for p in results["points"])
    contour = json.loads((out / "contour.json").read_text())
    assert contour["level"] == 0.05 and contour["lines"]["observed"] and contour["lines"]["expected"]
    # at m_LSP = 0 the expected line crosses between the last excluded and first allowed grid point
    cls0 = {p["values"][0]: p["cls_exp"][2] for p in results["points"] if p["values"][1] == 0.0}
    excluded = max(m for m, cls in cls0.items() if cls < 0.05)
    allowed = min(m for m, cls in cls0.items() if cls > 0.05)
    assert excluded < allowed
    low = [x for line in contour["lines"]["expected"] for x, y in line if y < 50]
    assert low and excluded <= min(low) and max(low) <= allowed, (low, cls0)

    # the pipeline's cache now holds the archive: with the server gone, an offline fetch works
    argv = ["--quiet", "fetch", doi, "--dest", str(tmp_path / "again"), "--offline"]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache"), "--doi-url", srv.doi_url]) == 0
    assert (tmp_path / "again" / "demo-likelihoods" / "BkgOnly.json").read_bytes() == (
        out / "pallet" / "demo-likelihoods" / "BkgOnly.json"
    ).read_bytes()
