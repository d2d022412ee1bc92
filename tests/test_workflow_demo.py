"""Issue 2 end to end: `recastfit init` + `snakemake --cores 2 contour` on the offline demo,
then adding grid points re-fits only the new ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyhf
import pytest

from recastfit import demo
from recastfit.cli.init import init_workflow
from recastfit.signals import read_yields_file, write_yields_file
from tests.workflow_util import copy_workflow

# the session's demo run (conftest.demo_workflow) is made once per pytest worker: keep its users on one
pytestmark = pytest.mark.xdist_group("demo_workflow")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECASTFIT_QUIET": "1"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "contour", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def demo_run(demo_workflow, tmp_path_factory) -> Path:
    """A copy of the session's demo run (conftest.demo_workflow): the last test here adds points to it."""
    return copy_workflow(demo_workflow, tmp_path_factory.mktemp("wf") / "wf")


def test_init_writes_a_workflow_folder(demo_run) -> None:
    assert 'include: "workflows/Snakefile"' in (demo_run / "Snakefile").read_text()
    for rel in (
        "workflows/Snakefile",
        "workflows/config/config.yaml",
        "workflows/rules/fit.smk",
        "workflows/scripts/step.py",
        "profiles/default/config.yaml",
    ):
        assert (demo_run / rel).is_file(), rel


def test_demo_results_match_pyhf(demo_run) -> None:
    res = json.loads((demo_run / "results" / "demo" / "results.json").read_text())
    assert res["parameters"] == demo.PARAMETERS and res["units"] == ["GeV", "GeV"]
    points = {tuple(p["values"]): p for p in res["points"]}
    assert set(points) == set(demo.demo_grid())
    assert all(p["status"] == "ok" for p in points.values())
    spec = json.loads((demo_run / "results" / "demo" / "signal_patchset.json").read_text())
    bkg = json.loads((demo_run / "demo" / "pallet" / "BkgOnly.json").read_text())
    ws = pyhf.Workspace(bkg)
    for patch in spec["patches"]:
        if tuple(patch["metadata"]["values"]) not in {(600.0, 100.0), (800.0, 600.0)}:
            continue
        model = ws.model(patches=[patch["patch"]])
        obs, exp = pyhf.infer.hypotest(
            1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
        )
        ours = points[tuple(patch["metadata"]["values"])]
        assert ours["cls_obs"] == pytest.approx(float(obs), abs=1e-6)
        assert ours["cls_exp"] == pytest.approx([float(e) for e in exp], abs=1e-6)


def test_demo_contour_lies_inside_grid(demo_run) -> None:
    out = demo_run / "results" / "demo"
    contour = json.loads((out / "contour.json").read_text())
    assert contour["parameters"] == demo.PARAMETERS and contour["level"] == 0.05
    for key in ("observed", "expected"):
        lines = contour["lines"][key]
        assert lines, key
        xs = [x for line in lines for x, _ in line]
        ys = [y for line in lines for _, y in line]
        assert min(xs) >= 200 - 1e-6 and max(xs) <= 1000 + 1e-6, key
        assert min(ys) >= 0 - 1e-6 and max(ys) <= 900 + 1e-6, key
        # the CLs table crosses 0.05 between m_parent = 700 and 800 GeV at m_LSP = 0
        low = [x for line in lines for x, y in line if y < 50]
        assert low and 700 <= min(low) and max(low) <= 800, (key, low)
    assert (out / "contour.png").stat().st_size > 10_000


def test_added_points_are_the_only_ones_refitted(demo_run) -> None:
    yields = demo_run / "demo" / "signal_yields.json"
    params, points = read_yields_file(yields)
    extra = [demo.demo_points([(650.0, 0.0), (650.0, 300.0)])]
    write_yields_file(yields, points + extra[0], params)
    proc = snakemake(demo_run)
    log = (demo_run / "results" / "demo" / "logs" / "gather.log").read_text() + proc.stdout + proc.stderr
    assert "demo: 56 points: 56 ok, 0 failed; 2 fitted now, 54 from the store" in log, log[-2000:]
    res = json.loads((demo_run / "results" / "demo" / "results.json").read_text())
    assert len(res["points"]) == 56


def test_bad_config_stops_snakemake_before_any_rule(tmp_path) -> None:
    init_workflow(tmp_path)
    cfg = (tmp_path / "workflows" / "config" / "config.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(cfg.replace("engine: pyhf", "engine: minuit"))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "contour", "--configfile", "bad.yaml"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "bad.yaml: key 'fit.engine': expected one of pyhf, fast, got 'minuit'" in proc.stderr
    assert not (tmp_path / "demo").exists() and not (tmp_path / "results" / "demo" / "pallet.json").exists()


def test_workflow_hepdata_submission_is_valid(demo_run) -> None:
    """The workflow's own HEPData output (results/demo/hepdata/) passes hepdata-validator."""
    from hepdata_validator.full_submission_validator import FullSubmissionValidator

    folder = demo_run / "results" / "demo" / "hepdata"
    validator = FullSubmissionValidator()
    assert validator.validate(directory=str(folder)), validator.get_messages()
    names = {p.name for p in folder.iterdir()}
    assert "submission.yaml" in names and "cls_grid.yaml" in names and len(names) >= 7, names
