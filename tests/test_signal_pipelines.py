"""Issue 4 end to end: `snakemake --cores 2 contour` with an efficiency-map signal (ATLAS staus) and
with the demo preserved analysis re-run per point through yadage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recastfit.cli.init import init_workflow
from tests.stau import reference

ROOT = Path(__file__).resolve().parent.parent


def snakemake(workdir: Path, config: dict) -> subprocess.CompletedProcess:
    (workdir / "cfg.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "RECASTFIT_QUIET": "1"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "contour", "--configfile", "cfg.yaml"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_stau_effmap_contour(tmp_path, stau_dir, xsec_dir) -> None:
    init_workflow(tmp_path)
    config = {
        "analysis": "stau",
        "demo": None,
        "pallet": {"source": str(stau_dir)},
        "signal": {
            "type": "effmap",
            "path": str(stau_dir),
            "xsec": str(xsec_dir / "pp13_stau_LR_NLO+NLL_PDF4LHC.json"),
        },
        "grid": {"parameters": ["m_stau", "m_LSP"], "units": ["GeV", "GeV"]},
        "fit": {"engine": "fast"},
        "backend": {"batch_size": 64},
    }
    snakemake(tmp_path, config)
    out = tmp_path / "results" / "stau"
    spec = json.loads((out / "signal_patchset.json").read_text())
    assert spec["metadata"]["labels"] == ["m_stau", "m_LSP"] and len(spec["patches"]) == 59
    refs = reference(stau_dir)
    res = json.loads((out / "results.json").read_text())
    assert len(res["points"]) == 59 == len(refs)
    for p in res["points"]:
        ref = refs[tuple(p["values"])]
        assert p["status"] == "ok", p
        assert p["cls_obs"] == pytest.approx(ref["obs"], abs=1e-3), p["name"]
        assert p["cls_exp"] == pytest.approx(ref["exp"], abs=1e-3), p["name"]
    contour = json.loads((out / "contour.json").read_text())
    assert contour["parameters"] == ["m_stau", "m_LSP"]
    # at small m_LSP the excluded band spans ~110-400 GeV (published observed: 120-390 GeV);
    # the grid's CLs_obs crosses 0.05 between 100 and 120 GeV and between 400 and 440 GeV
    for key in ("observed", "expected"):
        low = [x for line in contour["lines"][key] for x, y in line if y < 20]
        assert low and 80.0 <= min(low) <= 160.0 and 360.0 <= max(low) <= 440.0, (key, min(low), max(low))
    assert (out / "contour.png").stat().st_size > 10_000
