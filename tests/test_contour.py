"""Contours on synthetic grids with a known analytic CLs surface, against the true level set."""

from __future__ import annotations

import json

import contourpy
import numpy as np
import pytest
from scipy.spatial import Delaunay, cKDTree
from scipy.stats import norm

from recastfit.cli import main
from recastfit.contour import (
    ContourSet,
    contours_from_results,
    read_contour_lines,
    significance,
)
from recastfit.errors import InputError

Z05 = norm.isf(0.05)  # 1.64485
# Z offsets of the expected lines relative to the observed surface (pyhf order -2..+2 sigma)
EXP_OFFSETS = (0.9, 0.45, -0.2, -0.65, -1.1)


def ellipse(x, y):
    """One excluded region touching the m2 = 0 edge of the grid."""
    return Z05 + 2.5 * (1 - ((x - 500) / 300) ** 2 - ((y - 150) / 200) ** 2)


def two_islands(x, y):
    """Two separate excluded islands."""
    a = 4.0 * np.exp(-(((x - 300) / 120) ** 2 + ((y - 80) / 90) ** 2))
    b = 4.0 * np.exp(-(((x - 750) / 120) ** 2 + ((y - 300) / 110) ** 2))
    return np.maximum(a, b) - 0.5


def results_for(points, zfunc, failed=()):
    pts = []
    for i, (x, y) in enumerate(points):
        z = zfunc(x, y)
        p = {
            "name": f"p{i}",
            "values": [float(x), float(y)],
            "status": "ok",
            "cls_obs": float(norm.sf(z)),
            "cls_exp": [float(norm.sf(z + d)) for d in EXP_OFFSETS],
        }
        if i in failed:  # garbage CLs on a failed point must never be used
            p.update(status="failed", cls_obs=1e-12, cls_exp=[1e-12] * 5, reason="test")
        pts.append(p)
    return {
        "analysis": "toy",
        "parameters": ["m1", "m2"],
        "units": ["GeV", "GeV"],
        "labels": ["$m_1$", "$m_2$"],
        "points": pts,
    }


def true_lines(zfunc, offset=0.0):
    g = np.linspace(0, 1100, 1000)
    X, Y = np.meshgrid(g, g)
    return contourpy.contour_generator(g, g, zfunc(X, Y) + offset).lines(Z05)


def check_against_truth(lines, zfunc, points, tol, offset=0.0, margin=30.0):
    """Every extracted vertex within ``tol`` of the true line, inside the hull of ``points``; every
    true point well inside the hull (``margin``) within ``tol`` of an extracted line."""
    assert lines, "no contour found"
    got = np.vstack(lines)
    hull = Delaunay(points)
    assert np.all(hull.find_simplex(got, tol=1e-6) >= 0), "contour extrapolated beyond the grid"
    truth = np.vstack(true_lines(zfunc, offset))
    d_got = cKDTree(truth).query(got)[0]
    assert d_got.max() < tol, f"extracted line {d_got.max():.2f} GeV from the true level set"
    inner = np.all(
        [
            hull.find_simplex(truth + s, tol=0) >= 0
            for s in ([margin, 0], [-margin, 0], [0, margin], [0, -margin])
        ],
        axis=0,
    )
    assert inner.sum() > 50
    d_true = cKDTree(got).query(truth[inner])[0]
    assert d_true.max() < tol, f"true level set {d_true.max():.2f} GeV from the extracted line"


GRID = np.array([(x, y) for x in range(100, 1001, 50) for y in range(0, x, 50)], float)


@pytest.mark.parametrize("method,tol", [("rbf", 3.0), ("linear", 8.0)])
def test_regular_grid_observed_and_expected(method, tol):
    cs = contours_from_results(results_for(GRID, ellipse), method=method, mirror="none")
    check_against_truth(cs.lines["observed"], ellipse, GRID, tol)
    for kind, k in (
        ("expected", 2),
        ("expected_minus1sigma", 1),
        ("expected_plus1sigma", 3),
        ("expected_minus2sigma", 0),
        ("expected_plus2sigma", 4),
    ):
        check_against_truth(cs.lines[kind], ellipse, GRID, tol, offset=EXP_OFFSETS[k])


def test_two_islands():
    cs = contours_from_results(results_for(GRID, two_islands), mirror="none")
    assert len(cs.lines["observed"]) == 2
    centres = sorted(seg.mean(axis=0).tolist() for seg in cs.lines["observed"])
    np.testing.assert_allclose(centres, [[300.0, 80.0], [750.0, 300.0]], atol=5.0)
    check_against_truth(cs.lines["observed"], two_islands, GRID, 3.0)
    check_against_truth(cs.lines["expected"], two_islands, GRID, 3.0, offset=EXP_OFFSETS[2])


def test_irregular_grid_with_holes_and_failed_points():
    rng = np.random.default_rng(7)
    pts = rng.uniform(0, 1000, (700, 2))
    pts = pts[pts[:, 1] < pts[:, 0]]
    # two holes: one inside the excluded region, one across its edge
    pts = pts[
        (np.hypot(pts[:, 0] - 600, pts[:, 1] - 200) > 70) & (np.hypot(pts[:, 0] - 300, pts[:, 1] - 60) > 60)
    ]
    far = np.flatnonzero(ellipse(pts[:, 0], pts[:, 1]) < -1.0)[:8]  # failed points, far from exclusion
    res = results_for(pts, ellipse, failed=set(far.tolist()))
    cs = contours_from_results(res, mirror="none")
    ok = np.delete(pts, far, axis=0)
    check_against_truth(cs.lines["observed"], ellipse, ok, 8.0, margin=40.0)
    check_against_truth(cs.lines["expected"], ellipse, ok, 8.0, offset=EXP_OFFSETS[2], margin=40.0)
    lin = contours_from_results(res, mirror="none", method="linear")
    check_against_truth(lin.lines["observed"], ellipse, ok, 20.0, margin=40.0)


def test_mirror_auto_and_diagonal_boundary():
    # a surface symmetric under m1 <-> m2, excluded region reaching the diagonal
    def sym(x, y):
        return Z05 + 2.0 * (1 - ((x + y - 500) / 250) ** 2 - ((x - y) / 200) ** 2)

    grid = np.array([(x, y) for x in range(0, 501, 25) for y in range(0, x + 1, 25)], float)
    cs = contours_from_results(results_for(grid, sym))
    assert cs.mirror is True
    check_against_truth(cs.lines["observed"], sym, grid, 3.0)
    (seg,) = cs.lines["observed"]  # one arc from the diagonal back to the diagonal
    for end in (seg[0], seg[-1]):
        assert abs(end[0] - end[1]) < 0.5 and min(abs(end[0] - 125.0), abs(end[0] - 375.0)) < 1.0
    upper = contours_from_results(results_for(grid[:, ::-1], sym))
    assert upper.mirror is False  # points above the diagonal: auto does not mirror


def test_significance_clipped():
    z = significance([0.0, 1e-30, 0.05, 0.5, 1.0, float("nan")])
    assert z[0] == 5.0 and z[1] == 5.0 and z[4] == -5.0 and np.isnan(z[5])
    assert z[2] == pytest.approx(1.644854, abs=1e-6) and z[3] == pytest.approx(0.0, abs=1e-12)


def test_json_yaml_roundtrip(tmp_path):
    cs = contours_from_results(results_for(GRID, two_islands), mirror="none")
    cs.to_json(tmp_path / "contour.json")
    d = json.loads((tmp_path / "contour.json").read_text())
    assert d["parameters"] == ["m1", "m2"] and d["units"] == ["GeV", "GeV"] and d["level"] == 0.05
    assert set(d["lines"]) == {
        "observed",
        "expected",
        "expected_minus1sigma",
        "expected_plus1sigma",
        "expected_minus2sigma",
        "expected_plus2sigma",
    }
    back = ContourSet.from_json(tmp_path / "contour.json")
    for kind, segs in cs.lines.items():
        assert len(back.lines[kind]) == len(segs)
        for a, b in zip(back.lines[kind], segs, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    cs.to_yaml(tmp_path / "contour.yaml")
    obs = read_contour_lines(tmp_path / "contour.yaml", "observed")
    assert len(obs) == 2
    for a, b in zip(obs, cs.lines["observed"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(read_contour_lines(tmp_path / "contour.yaml", "expected_plus2sigma")) == len(
        cs.lines["expected_plus2sigma"]
    )


def test_errors_name_file_and_key(tmp_path):
    res = results_for(GRID[:4], ellipse, failed={0, 1})
    path = tmp_path / "results.json"
    path.write_text(json.dumps(res))
    with pytest.raises(InputError, match=r"results\.json: points: need at least 3"):
        contours_from_results(path)
    res["points"][2]["values"] = [1.0]
    path.write_text(json.dumps(res))
    with pytest.raises(InputError, match=r"points\[2\]\.values"):
        contours_from_results(path)


def test_cli_contour(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_for(GRID, ellipse, failed={3})))
    out = tmp_path / "out"
    rc = main(
        [
            "contour",
            str(path),
            "--json",
            str(out / "c.json"),
            "--yaml",
            str(out / "c.yaml"),
            "--method",
            "linear",
        ]
    )
    assert rc == 0
    d = json.loads((out / "c.json").read_text())
    assert d["analysis"] == "toy" and len(d["lines"]["observed"]) >= 1
    assert "observed" in (out / "c.yaml").read_text()
    rc = main(["contour", str(tmp_path / "missing.json"), "--json", str(out / "x.json")])
    assert rc == 2 and "missing.json" in capsys.readouterr().err
