"""The offline demo analysis: a valid workspace with every modifier kind and a grid that the
exclusion contour crosses (sensitivity falls with mass)."""

from __future__ import annotations

import json

import pyhf

from recastfit import demo
from recastfit.infer.reference import hypotest_batch
from recastfit.patches import build_patchset, patchset_tasks
from recastfit.results import FitSettings


def test_demo_workspace_structure() -> None:
    spec = demo.background_workspace()
    ws = pyhf.Workspace(spec)
    model = ws.model(poi_name=None)
    assert set(model.config.channels) == {"CR", "SRA", "SRB"}
    assert model.config.channel_nbins == {"CR": 1, "SRA": 4, "SRB": 1}
    types = {m["type"] for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]}
    assert {"normsys", "histosys", "staterror", "lumi", "normfactor"} <= types
    assert ws.data(model, include_auxdata=False) == [503.0, 20.0, 12.0, 4.0, 2.0, 29.0]


def test_demo_grid_and_yields() -> None:
    grid = demo.demo_grid()
    assert len(grid) == 54 >= 40
    assert all(m2 < m1 for m1, m2 in grid)
    totals = {pt: sum(sum(c.yields) for c in demo.signal_yields(*pt).values()) for pt in grid}
    assert totals[(200.0, 0.0)] > 100 * totals[(1000.0, 0.0)]


def test_demo_sensitivity_falls_with_mass(tmp_path) -> None:
    paths = demo.write_demo(tmp_path)
    bkg = json.loads(paths["workspace"].read_text())
    points = [p for p in demo.demo_points() if p.values in {(300.0, 0.0), (1000.0, 0.0), (600.0, 500.0)}]
    spec = build_patchset(bkg, points, parameters=demo.PARAMETERS)
    results = {r.name: r for r in hypotest_batch(bkg, patchset_tasks(spec), FitSettings())}
    assert results["demo_300_0"].cls_obs < 1e-3  # light: excluded
    assert results["demo_1000_0"].cls_obs > 0.5  # heavy: not excluded
    assert results["demo_1000_0"].cls_exp[2] > 0.5
    assert results["demo_600_500"].cls_exp[2] > 0.1  # compressed: weak
