"""The preserved analysis re-run through yadage inside the workflow: one `recast` job per point
(6-point small demo grid), then patches, fit and a contour that crosses the grid."""

from __future__ import annotations

import json
import shutil

import pytest

from recastfit import demo
from tests.workflow_util import new_workflow, run_snakemake

pytestmark = pytest.mark.skipif(shutil.which("yadage-run") is None, reason="yadage-run is not installed")


def test_recast_rule_per_point_then_contour(tmp_path) -> None:
    wf = new_workflow(tmp_path)
    demo.write_demo(wf / "demo", grid="small")
    config = {
        "analysis": "demo-recast",
        "pallet": {"source": "demo/pallet"},
        "signal": {"type": "recast", "spec": "specs/demo", "points": "demo/points.json"},
        "grid": {"parameters": demo.PARAMETERS, "units": demo.UNITS},
        "fit": {"jobs": 2},
    }
    run_snakemake(wf, config=config)
    out = wf / "results" / "demo-recast"
    names = [demo.point_name(m1, m2) for m1, m2 in demo.demo_grid("small")]
    assert len(names) == 6
    for name in names:  # every point went through its own yadage workflow
        assert (out / "recast" / name / "_yadage" / "yadage_snapshot_workflow.json").is_file(), name
    sample = json.loads((out / "yields" / "demo_700_0.json").read_text())
    assert sample["channels"] == {k: v.to_dict() for k, v in demo.signal_yields(700.0, 0.0).items()}
    res = json.loads((out / "results.json").read_text())
    assert len(res["points"]) == 6 and all(p["status"] == "ok" for p in res["points"])
    by_name = {p["name"]: p for p in res["points"]}
    assert by_name["demo_400_0"]["cls_obs"] < 0.05 < by_name["demo_1000_0"]["cls_obs"]
    contour = json.loads((out / "contour.json").read_text())
    low = [x for line in contour["lines"]["observed"] for x, y in line if y < 50]
    assert low and 700 <= min(low) <= 800, low  # CLs_obs at m_LSP = 0: 0.0098 (700) -> 0.77 (1000)
