"""The offline demo analysis: a valid workspace with every modifier kind, grids that the exclusion
contour crosses (sensitivity falls with mass), the files `recastfit demo` writes and the demo step."""

from __future__ import annotations

import json

import pyhf
import pytest

from recastfit import demo
from recastfit.cli import main
from recastfit.demo.step import main as step_main
from recastfit.infer.reference import hypotest_batch
from recastfit.patches import build_patchset, patchset_tasks
from recastfit.results import FitSettings
from recastfit.signals.yields_file import read_yields_file


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
    small = demo.demo_grid("small")
    assert small == [
        (400.0, 0.0),
        (400.0, 300.0),
        (700.0, 0.0),
        (700.0, 300.0),
        (1000.0, 0.0),
        (1000.0, 300.0),
    ]
    assert set(small) <= set(grid)
    totals = {pt: sum(sum(c.yields) for c in demo.signal_yields(*pt).values()) for pt in grid}
    assert totals[(200.0, 0.0)] > 100 * totals[(1000.0, 0.0)]
    with pytest.raises(ValueError, match="unknown demo grid 'tiny'; expected one of full, small"):
        demo.demo_grid("tiny")


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


def test_small_grid_contour_crosses_both_rows() -> None:
    """On each m_LSP row of the small grid, CLs goes from excluded (< 0.05) to allowed (> 0.05)."""
    bkg = demo.background_workspace()
    spec = build_patchset(bkg, demo.demo_points(demo.demo_grid("small")), parameters=demo.PARAMETERS)
    cls = {
        r.name: (r.cls_obs, r.cls_exp[2]) for r in hypotest_batch(bkg, patchset_tasks(spec), FitSettings())
    }
    for m_lsp in (0, 300):
        row = [cls[f"demo_{m1}_{m_lsp}"] for m1 in (400, 700, 1000)]
        assert row[0][0] < 0.01 and row[0][1] < 0.01, row
        assert row[-1][0] > 0.5 and row[-1][1] > 0.5, row
    assert cls["demo_700_0"][0] < 0.05 < cls["demo_700_300"][0]  # the observed line runs between them


def test_cli_writes_an_ordinary_points_file(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--grid", "small"]) == 0
    printed = capsys.readouterr().out
    for role in ("workspace", "yields", "points", "grid"):
        assert role in printed
    points = json.loads((tmp_path / "d" / "points.json").read_text())
    assert points == [{"name": demo.point_name(*g), "values": list(g)} for g in demo.demo_grid("small")]
    grid = json.loads((tmp_path / "d" / "grid.json").read_text())
    assert grid == {"parameters": demo.PARAMETERS, "units": ["GeV", "GeV"], "points": points}
    params, yields = read_yields_file(tmp_path / "d" / "signal_yields.json")
    assert params == demo.PARAMETERS and [p.name for p in yields] == [p["name"] for p in points]
    assert yields[3].channels == demo.signal_yields(700.0, 300.0)
    assert json.loads((tmp_path / "d" / "pallet" / "BkgOnly.json").read_text()) == demo.background_workspace()
    assert main(["demo", "--out", str(tmp_path / "full")]) == 0
    assert len(json.loads((tmp_path / "full" / "points.json").read_text())) == 54
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path / "x"), "--grid", "tiny"])


def test_demo_step_reads_a_parameters_file(tmp_path, capsys) -> None:
    params = tmp_path / "point.json"
    params.write_text(json.dumps({"name": "demo_500_100", "values": {"m_parent": 500, "m_LSP": 100}}))
    assert step_main(["--params", str(params), "--out", str(tmp_path / "y.json")]) == 0
    got = json.loads((tmp_path / "y.json").read_text())
    assert got["name"] == "demo_500_100" and got["values"] == [500.0, 100.0]
    assert got["channels"]["SRB"]["yields"] == list(demo.signal_yields(500.0, 100.0)["SRB"].yields)
    assert step_main(["--m-parent", "300", "--m-lsp", "0", "--out", str(tmp_path / "z.json")]) == 0
    assert json.loads((tmp_path / "z.json").read_text())["name"] == "demo_300_0"
    # a hostile parameters file: a shell-syntax name, then a NaN value, then an unphysical point
    params.write_text(json.dumps({"name": "x$(touch pwned)", "values": {"m_parent": 500, "m_LSP": 100}}))
    assert step_main(["--params", str(params), "--out", str(tmp_path / "bad.json")]) == 2
    assert "point.json: name: expected a name made of letters" in capsys.readouterr().err
    params.write_text('{"name": "p", "values": {"m_parent": NaN, "m_LSP": 1}}')
    assert step_main(["--params", str(params), "--out", str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON: NaN is not a JSON number" in capsys.readouterr().err
    params.write_text(json.dumps({"name": "p", "values": {"m_parent": 300, "m_LSP": True}}))
    assert step_main(["--params", str(params), "--out", str(tmp_path / "bad.json")]) == 2
    assert "values.m_LSP: expected a finite number, got True" in capsys.readouterr().err
    assert step_main(["--m-parent", "300", "--m-lsp", "400", "--out", str(tmp_path / "bad.json")]) == 2
    assert "demo_step: error: m_LSP=400.0 must be below m_parent=300.0" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "pwned").exists()
