"""HEPData submission of the demo's contours (real pyhf fits), checked with hepdata-validator and
against the results and contour.json it was built from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hepdata_validator.full_submission_validator import FullSubmissionValidator

from recastfit.contour import ContourOptions, ContourSet, draw_contour_files, results_arrays
from recastfit.submission import (
    GRID_TABLE,
    LINE_TITLES,
    cmenergies_gev,
    hepdata_reference,
    validate_folder,
    validate_single_file,
    write_submission_folder,
)
from tests.test_plot import demo_results

OPTIONS = ContourOptions(
    sqrts="13 TeV",
    lumi="139 fb$^{-1}$",
    label="demo analysis",
    reactions=("P P --> CHARGINO1 NEUTRALINO2 X",),
    phrases=("Supersymmetry", "Electroweak"),
    location="Reinterpretation, Figure 1",
    description="Demo signal grid reinterpreted with recastfit.",
)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """The demo on 15 points (pyhf fits), one marked failed, drawn with draw_contour_files."""
    tmp = tmp_path_factory.mktemp("submission")
    res = demo_results()
    last = res["points"][-1]  # (900, 600): far from the excluded region
    res["points"][-1] = {
        **last,
        "status": "failed",
        "cls_obs": None,
        "cls_exp": None,
        "reason": "test: masked",
    }
    path = tmp / "results.json"
    path.write_text(json.dumps(res))
    out = draw_contour_files(path, tmp / "out", OPTIONS, hepdata_record="ins1755298")
    return res, tmp / "out", out


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_folder_passes_hepdata_validator(demo_out):
    _, out, written = demo_out
    folder = out / "hepdata"
    assert written["hepdata"] == folder
    validator = FullSubmissionValidator()
    ok = validator.validate(directory=str(folder))
    assert ok, {f: [m.message for m in ms] for f, ms in validator.get_messages().items()}
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        [
            "submission.yaml",
            "cls_grid.yaml",
            "contour.png",
            "observed_limit.yaml",
            "expected_limit.yaml",
            "expected_limit_-1_sigma.yaml",
            "expected_limit_+1_sigma.yaml",
            "expected_limit_-2_sigma.yaml",
            "expected_limit_+2_sigma.yaml",
        ]
    )
    assert validate_folder(folder) == []
    assert not list(out.glob(".hepdata.*")), "a temporary folder was left behind"


def test_single_file_contour_yaml_passes_validator(demo_out, tmp_path, monkeypatch):
    _, out, _ = demo_out
    assert validate_single_file(out / "contour.yaml") == []
    # the validator itself, on the plain file (it writes the extracted tables into the cwd)
    monkeypatch.chdir(tmp_path)
    validator = FullSubmissionValidator()
    assert validator.validate(file=str(out / "contour.yaml")), validator.get_messages()
    docs = load_docs(out / "contour.yaml")
    assert [d["name"] for d in docs[1:]] == [*LINE_TITLES.values(), GRID_TABLE]


def test_tables_match_contour_json_and_results(demo_out):
    res, out, _ = demo_out
    folder = out / "hepdata"
    header, *tables = load_docs(folder / "submission.yaml")
    assert header["comment"] == OPTIONS.description
    links = {r["location"]: r["description"] for r in header["additional_resources"]}
    assert "https://www.hepdata.net/record/ins1755298" in links and "contour.png" in links
    contour = json.loads((out / "contour.json").read_text())
    assert (
        contour["hepdata_record"] == "ins1755298" and contour["n_failed"] == 1 and contour["n_points"] == 15
    )
    by_name = {t["name"]: t for t in tables}
    assert set(by_name) == {*LINE_TITLES.values(), GRID_TABLE}
    for t in tables:
        kw = {k["name"]: k["values"] for k in t["keywords"]}
        assert kw == {
            "observables": ["CLs"],
            "reactions": ["P P --> CHARGINO1 NEUTRALINO2 X"],
            "phrases": ["Supersymmetry", "Electroweak"],
            "cmenergies": [13000.0],
        }
        assert t["location"] == "Reinterpretation, Figure 1" and (folder / t["data_file"]).is_file()
    for kind, title in LINE_TITLES.items():
        data = yaml.safe_load((folder / by_name[title]["data_file"]).read_text())
        (x,) = data["independent_variables"]
        (y,) = data["dependent_variables"]
        assert x["header"] == {"name": "m_parent", "units": "GeV"} and y["header"] == {
            "name": "m_LSP",
            "units": "GeV",
        }
        assert {"name": "contour", "value": kind} in y["qualifiers"]
        got = np.c_[[v["value"] for v in x["values"]], [v["value"] for v in y["values"]]]
        (want,) = contour["lines"][kind]  # one piece per kind on the demo grid
        np.testing.assert_allclose(got, want, atol=2e-6)
    grid = yaml.safe_load((folder / by_name[GRID_TABLE]["data_file"]).read_text())
    assert [v["header"] for v in grid["independent_variables"]] == [
        {"name": "m_parent", "units": "GeV"},
        {"name": "m_LSP", "units": "GeV"},
    ]
    cols = {v["header"]["name"]: [e["value"] for e in v["values"]] for v in grid["dependent_variables"]}
    assert list(cols) == [
        "CLs observed",
        "CLs expected",
        "CLs expected -1 sigma",
        "CLs expected +1 sigma",
        "CLs expected -2 sigma",
        "CLs expected +2 sigma",
    ]
    xs = [v["value"] for v in grid["independent_variables"][0]["values"]]
    assert xs == [p["values"][0] for p in res["points"]]
    for i, p in enumerate(res["points"]):
        if p["status"] != "ok":
            assert all(cols[c][i] == "-" for c in cols)
            continue
        assert cols["CLs observed"][i] == pytest.approx(p["cls_obs"], rel=1e-5)
        for c, k in (("CLs expected", 2), ("CLs expected -2 sigma", 0), ("CLs expected +2 sigma", 4)):
            assert cols[c][i] == pytest.approx(p["cls_exp"][k], rel=1e-5)


def test_recid_links_related_record_and_replaces_old_folder(demo_out, tmp_path):
    res, out, _ = demo_out
    cs = ContourSet.from_json(out / "contour.json")
    dest = tmp_path / "hepdata"
    dest.mkdir()
    (dest / "stale.yaml").write_text("old\n")
    marker = tmp_path / "keep.txt"
    marker.write_text("outside")
    write_submission_folder(
        cs, results_arrays(res), dest, OPTIONS, hepdata_record="10.17182/hepdata.90607.v3/r3"
    )
    header = load_docs(dest / "submission.yaml")[0]
    assert header["related_to_hepdata_records"] == [90607]
    assert not (dest / "stale.yaml").exists() and marker.read_text() == "outside"
    assert validate_folder(dest) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hepdata", "keep.txt"]


def test_failure_leaves_old_folder_and_no_temporaries(demo_out, tmp_path):
    res, out, _ = demo_out
    cs = ContourSet.from_json(out / "contour.json")
    dest = tmp_path / "hepdata"
    write_submission_folder(cs, results_arrays(res), dest, OPTIONS)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    bad = ContourOptions(sqrts="thirteen")  # built directly: from_dict would refuse it
    with pytest.raises(ValueError, match="13 TeV"):
        write_submission_folder(cs, results_arrays(res), dest, bad)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hepdata"]


def test_validator_messages_reach_the_caller(demo_out, tmp_path):
    """validate_folder is not vacuous: an unreferenced file and a missing data file are reported."""
    import shutil

    _, out, _ = demo_out
    folder = tmp_path / "sub"
    shutil.copytree(out / "hepdata", folder)
    (folder / "extra.txt").write_text("x")
    (folder / "cls_grid.yaml").unlink()
    msgs = validate_folder(folder)
    assert any("extra.txt is not referenced" in m for m in msgs), msgs
    assert any("Missing data_file 'cls_grid.yaml'" in m for m in msgs), msgs


@pytest.mark.parametrize(
    "given,want",
    [
        ("ins1755298", "ins1755298"),
        ("INS1755298.v3", "ins1755298"),
        ("10.17182/hepdata.90607.v3/r3", 90607),
        ("https://doi.org/10.17182/hepdata.90607.v3", 90607),
        (90607, 90607),
        ("90607", 90607),
        ("demo/pallet", None),
        ("file:///tmp/x.tar.gz", None),
        (None, None),
        (0, None),
    ],
)
def test_hepdata_reference(given, want):
    assert hepdata_reference(given) == want


def test_cmenergies():
    assert cmenergies_gev("13 TeV") == 13000.0 and cmenergies_gev(" 8 TeV ") == 8000.0
    with pytest.raises(ValueError, match="like '13 TeV'"):
        cmenergies_gev("13")
