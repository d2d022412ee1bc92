"""Contours on synthetic grids with a known analytic CLs surface, against the true level set."""

from __future__ import annotations

import json
from pathlib import Path

import contourpy
import numpy as np
import pytest
from scipy.spatial import Delaunay, cKDTree
from scipy.stats import norm

from recastfit.cli import main
from recastfit.contour import (
    ContourOptions,
    ContourSet,
    contours_from_results,
    draw_contour_files,
    read_contour_lines,
    significance,
)
from recastfit.errors import ConfigError, InputError

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


FULL_SECTION = {
    "mirror": "none",
    "level": 0.1,
    "method": "linear",
    "resolution": 150,
    "reference": "ref.txt",
    "reference_label": "ATLAS 2020",
    "title": "toy",
    "band2": False,
    "sqrts": "13.6 TeV",
    "lumi": "140 fb$^{-1}$",
    "label": "toy analysis",
    "style": "cms",
    "color_by": "significance",
    "location": "Figure 3",
    "description": "a toy",
    "reactions": ["P P --> X"],
    "phrases": ["SUSY"],
}


def test_contour_options_from_dict_and_schema():
    from dataclasses import fields

    import jsonschema
    import yaml

    assert ContourOptions.from_dict(None, file="c.yaml") == ContourOptions()
    assert ContourOptions().band2 is True and ContourOptions().level == 0.05
    opts = ContourOptions.from_dict(FULL_SECTION, file="c.yaml")
    assert opts.reactions == ("P P --> X",) and opts.band2 is False and opts.level == 0.1
    schema_file = Path(__file__).parents[1] / "workflows" / "schemas" / "config.schema.yaml"
    block = yaml.safe_load(schema_file.read_text())["properties"]["contour"]
    assert block["additionalProperties"] is False
    assert sorted(block["properties"]) == sorted(f.name for f in fields(ContourOptions))
    check = jsonschema.Draft202012Validator(block)
    assert not list(check.iter_errors(FULL_SECTION))
    bad = [
        ("mirror", "yes", "one of auto, diagonal, none"),
        ("level", 5, "between 0 and 1"),
        ("level", True, "between 0 and 1"),
        ("resolution", 5, "20 to 2000"),
        ("band2", "no", "true or false"),
        ("sqrts", "13", "like '13 TeV'"),
        ("style", "root", "plain, atlas, cms"),
        ("reactions", "P P --> X", "a list of non-empty strings"),
        ("phrases", [""], "a list of non-empty strings"),
        ("lumi", 139, "a string"),
        ("colour", "red", "no such key"),
    ]
    for key, value, expected in bad:
        with pytest.raises(ConfigError, match=rf"c\.yaml: key 'contour\.{key}': expected .*{expected}"):
            ContourOptions.from_dict({key: value}, file="c.yaml")
        assert list(check.iter_errors({key: value})), f"the schema accepts contour.{key} = {value!r}"


def test_draw_contour_files_atomic_and_failure(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_for(GRID, two_islands, failed={5})))
    out = tmp_path / "out"
    opts = ContourOptions(
        mirror="none", method="linear", sqrts="13 TeV", lumi="139 fb$^{-1}$", resolution=120
    )
    res = draw_contour_files(path, out, opts, hepdata_record=1234, figure=False)
    assert res["lines"]["observed"] == 2
    names = sorted(p.name for p in out.iterdir())
    assert names == ["contour.json", "contour.yaml", "hepdata"]
    d = json.loads((out / "contour.json").read_text())
    assert d["hepdata_record"] == 1234 and d["n_failed"] == 1 and d["sqrts"] == "13 TeV"
    tables = sorted(p.name for p in (out / "hepdata").iterdir())
    assert "observed_limit_part_1_of_2.yaml" in tables and "observed_limit_part_2_of_2.yaml" in tables
    # both islands come back from the HEPData YAML
    assert len(read_contour_lines(out / "contour.yaml")) == 2
    # a file where the submission folder goes: a named error, the other outputs are kept,
    # and no temporary folder is left behind
    import shutil

    shutil.rmtree(out / "hepdata")
    (out / "hepdata").write_text("in the way")
    with pytest.raises(InputError, match=r"hepdata: expected a folder"):
        draw_contour_files(path, out, opts, figure=False)
    assert sorted(p.name for p in out.iterdir()) == ["contour.json", "contour.yaml", "hepdata"]
    assert (out / "hepdata").read_text() == "in the way"


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("results.json", '{"points": [{"values": [1, 2], "cls_obs": NaN}]}', "not valid JSON"),
        ("results.json", "[1, 2]", "expected a JSON object"),
        ("results.json", '{"points": []}', "points: expected a non-empty list"),
        ("results.json", '{"points": [{"values": "ab"}]}', r"points\[0\]\.values"),
    ],
)
def test_bad_results_named_errors(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=rf"{name}.*{match}"):
        draw_contour_files(path, tmp_path / "out", figure=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("ref.yaml", "a: &x [1]\nb: *x\n", "aliases are not allowed"),
        ("ref.yaml", "name: only a header\n", "no table with one independent"),
        ("ref.json", '{"lines": {"expected": []}}', "observed"),
        ("ref.txt", "1 2\nthree four\n", "expected contour.json"),
    ],
)
def test_bad_reference_named_errors(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=rf"{name}.*{match}"):
        read_contour_lines(path)


def test_reference_file_size_capped(tmp_path, monkeypatch):
    monkeypatch.setenv("RECASTFIT_MAX_INPUT_BYTES", "1000")
    path = tmp_path / "ref.txt"
    path.write_text("1 2\n" * 1000)
    with pytest.raises(InputError, match=r"ref\.txt: the reference contour is larger than 1000 bytes"):
        read_contour_lines(path)


def test_cli_out_dir_with_options(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_for(GRID, ellipse)))
    out = tmp_path / "out"
    argv = ["contour", str(path), "--out-dir", str(out), "--mirror", "none", "--resolution", "120"]
    argv += ["--sqrts", "13 TeV", "--lumi", "139 fb$^{-1}$", "--style", "atlas", "--no-band2"]
    argv += ["--hepdata-record", "ins1755298", "--label", "toy analysis"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "contour.json",
        "contour.pdf",
        "contour.png",
        "contour.yaml",
        "hepdata",
    ]
    d = json.loads((out / "contour.json").read_text())
    assert d["hepdata_record"] == "ins1755298" and d["label"] == "toy analysis" and d["mirror"] is False
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["contour", str(path), "--out-dir", str(out), "--sqrts", "13"]) == 2
    assert "command line: key 'contour.sqrts': expected an energy like '13 TeV'" in capsys.readouterr().err


def test_cli_manifest_record_and_overlay(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_for(GRID, two_islands)))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"source": "10.17182/hepdata.90607.v3/r3", "selected": {}}))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    base = ["--quiet", "contour", str(path), "--mirror", "none", "--method", "linear", "--resolution", "100"]
    assert main([*base, "--json", str(a), "--manifest", str(manifest)]) == 0
    assert json.loads(a.read_text())["hepdata_record"] == 90607
    assert main([*base, "--json", str(b), "--level", "0.01", "--hepdata-record", "ins1755298"]) == 0
    d = json.loads(b.read_text())
    assert d["hepdata_record"] == "ins1755298" and d["level"] == 0.01
    png = tmp_path / "overlay.png"
    argv = [
        "--quiet",
        "contour",
        "--overlay",
        str(a),
        str(b),
        "--png",
        str(png),
        "--labels",
        "CLs 0.05",
        "CLs 0.01",
    ]
    assert main(argv) == 0 and png.stat().st_size > 10_000
    assert main(["contour", "--overlay", str(a), str(b), "--png", str(png), "--labels", "one"]) == 2
    assert "--labels: 1 labels for 2 files" in capsys.readouterr().err
    assert main(["contour", str(a), str(b), "--json", str(tmp_path / "x.json")]) == 2
    assert "several need --overlay" in capsys.readouterr().err


def test_cli_options_from_config_then_flags(tmp_path):
    """--config takes the contour: section of a workflow config; command-line flags win."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).parents[1] / "workflows" / "config" / "config.yaml").read_text())
    cfg["contour"] = {"mirror": "none", "title": "from the config", "reference": None}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_for(GRID, ellipse)))
    from recastfit.cli import build_parser
    from recastfit.cli.contour import options_from_args

    args = build_parser().parse_args(
        ["contour", str(path), "--config", str(tmp_path / "cfg.yaml"), "--sqrts", "13 TeV", "--no-band2"]
    )
    opts = options_from_args(args)
    assert (opts.mirror, opts.title, opts.sqrts, opts.band2) == ("none", "from the config", "13 TeV", False)
    cfg["contour"] = {"mirror": "sometimes"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    args = build_parser().parse_args(["contour", str(path), "--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: key 'contour\.mirror': expected one of auto, diagonal, none"
    ):
        options_from_args(args)
