"""The workflow as the field's tools see it: `snakemake --lint` clean, `--summary` without --cores,
the Slurm example profile's dry run (one Slurm job per fit share), a report with the figures, and
two analyses in one run drawn on one overlay."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import zipfile

import pytest

from recastfit import demo
from tests.workflow_util import SNAKEMAKE, copy_workflow, run_snakemake

# the session's demo run (conftest.demo_workflow) is made once per pytest worker: keep its users on one
pytestmark = pytest.mark.xdist_group("demo_workflow")


@pytest.fixture(scope="module")
def wf(demo_workflow, tmp_path_factory):
    """A copy of the session's demo run: the two-analysis run below fits only the second analysis."""
    return copy_workflow(demo_workflow, tmp_path_factory.mktemp("native") / "wf")


def test_lint_is_clean(wf) -> None:
    proc = subprocess.run([*SNAKEMAKE, "--lint"], cwd=wf, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_summary_needs_no_cores(wf) -> None:
    proc = subprocess.run([*SNAKEMAKE, "--summary"], cwd=wf, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "results/demo/contour.png" in proc.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None, reason="slurm executor plugin absent"
)
def test_slurm_profile_dry_run_has_one_job_per_fit_share(wf) -> None:
    (wf / "four.yaml").write_text(
        (wf / "workflows/config/config.yaml")
        .read_text()
        .replace("calctype: asymptotics", "calctype: asymptotics\n  jobs: 4")
    )
    cmd = [*SNAKEMAKE, "-n", "--profile", "workflows/profiles/slurm", "contour", "--configfile", "four.yaml"]
    proc = subprocess.run(cmd, cwd=wf, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    table = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert table.get("fit_part") == "4" and table.get("gather") == "1", out[-2000:]


def test_two_analyses_one_run_with_overlay_and_report(wf) -> None:
    demo.write_demo(wf / "demo2", grid="small")
    base = (wf / "workflows/config/config.yaml").read_text()
    (wf / "a.yaml").write_text(base)
    (wf / "b.yaml").write_text(
        base.replace("analysis: demo", "analysis: demo-small")
        .replace("demo: demo", "demo: null")
        .replace("source: demo/pallet", "source: demo2/pallet")
        .replace("path: demo/signal_yields.json", "path: demo2/signal_yields.json")
    )
    (wf / "run.yaml").write_text("analyses: [a.yaml, b.yaml]\noverlay: {title: demo vs small}\n")
    demo_json = (wf / "results" / "demo" / "results.json").stat().st_mtime
    run_snakemake(wf, "--configfile", "run.yaml")
    # the first analysis has the settings of the run already in the folder: nothing of it reruns
    assert (wf / "results" / "demo" / "results.json").stat().st_mtime == demo_json
    for name, n in (("demo", 54), ("demo-small", 6)):
        res = json.loads((wf / "results" / name / "results.json").read_text())
        assert len(res["points"]) == n and all(p["status"] == "ok" for p in res["points"]), name
    assert (wf / "results" / "overlay.png").stat().st_size > 10_000
    proc = subprocess.run(
        [*SNAKEMAKE, "--report", "report.zip", "contour", "--configfile", "run.yaml"],
        cwd=wf,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = zipfile.ZipFile(wf / "report.zip").namelist()
    assert sum(n.endswith("contour.png") for n in names) == 2 and any(
        n.endswith("overlay.png") for n in names
    )
