"""Efficiency maps x cross section x luminosity -> yields -> PatchSet, on the real stau grid."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pyhf
import pytest
from threadpoolctl import threadpool_limits

from recastfit.errors import ConfigError, InputError
from recastfit.patches import SignalOptions, build_patchset, patchset_tasks
from recastfit.results import FitSettings, PatchTask
from recastfit.signals.effmap import effmap_yields, parse_lumi, read_effmap, read_global_info
from recastfit.signals.sources import load_signal_points
from recastfit.signals.xsec import CrossSectionTable, XsecRangeError
from tests.stau import reference, stau_grid, stau_patch

STAU_XSEC = "pp13_stau_LR_NLO+NLL_PDF4LHC.json"
CHECK = [(280.0, 120.0), (360.0, 200.0), (80.0, 1.0)]  # the shared README's examples


def stau_section(stau_dir, xsec_dir, **extra) -> dict:
    return {"type": "effmap", "path": str(stau_dir), "xsec": str(xsec_dir / STAU_XSEC), **extra}


def _bkg(stau_dir) -> dict:
    return json.loads((stau_dir / "BkgOnly.json").read_text())


def _pyhf_cls(bkg: dict, patch: list[dict]) -> tuple[float, list[float]]:
    threadpool_limits(1)  # two worker processes on two cores: one BLAS thread each
    pyhf.set_backend("numpy", "scipy")
    ws = pyhf.Workspace(bkg)
    model = ws.model(patches=[patch])
    obs, exp = pyhf.infer.hypotest(1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True)
    return float(obs), [float(e) for e in exp]


def _ours(bkg: dict, task: PatchTask) -> tuple[float, list[float]]:
    from recastfit.infer import hypotest_batch

    threadpool_limits(1)
    (res,) = hypotest_batch(bkg, [task], FitSettings())
    return res.cls_obs, res.cls_exp


def test_global_info_and_maps(stau_dir) -> None:
    info = read_global_info(stau_dir / "globalInfo.txt")
    assert info.id == "ATLAS-SUSY-2018-04" and info.lumi_fb == 139.0
    assert info.regions == {"SRlow": "SR1cut_cuts", "SRhigh": "SR2cut_cuts"}
    low = read_effmap(stau_dir / "SRlow" / "TStauStau.txt")
    assert low.region == "SRlow" and low.txname == "TStauStau" and len(low.values) == 59
    assert low.values[(80.0, 1.0)] == 8.0403e-06 and low.values[(100.0, 60.0)] == 0.0
    assert parse_lumi("139000/pb") == pytest.approx(139.0) and parse_lumi(0.139 * 1000) == 139.0
    assert parse_lumi("3/ab") == 3000.0


def test_full_stau_grid_patchset_matches_pyhf(stau_dir, xsec_dir) -> None:
    """All 59 points; three against pyhf on hand-built patches (1e-6) and the README (1e-3)."""
    bkg = _bkg(stau_dir)
    found = load_signal_points(
        stau_section(stau_dir, xsec_dir), config_file="cfg.yaml", base_dir=stau_dir, bkg_spec=bkg
    )
    assert found.skipped == []
    hand = {(m1, m2): (y1, y2) for m1, m2, y1, y2 in stau_grid(stau_dir, xsec_dir)}
    assert len(found.points) == len(hand) == 59
    for p in found.points:
        assert p.channels["SR1cut_cuts"].yields == (hand[p.values][0],)
        assert p.channels["SR2cut_cuts"].yields == (hand[p.values][1],)
    spec = build_patchset(
        bkg,
        found.points,
        SignalOptions(),
        parameters=["m_stau", "m_LSP"],
        analysis_id="ATLAS-SUSY-2018-04",
        hepdata_record="ins1765529",
    )
    assert spec["metadata"]["labels"] == ["m_stau", "m_LSP"]
    assert spec["metadata"]["digests"]["sha256"] == pyhf.utils.digest(bkg)
    assert pyhf.PatchSet(spec)["TStauStau_280_120"] is not None
    tasks = {t.values: t for t in patchset_tasks(spec)}
    assert len(tasks) == 59
    for m in tasks:
        assert tasks[m].patch == stau_patch(bkg, *hand[m]), m
    refs = reference(stau_dir)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        ours = [pool.submit(_ours, bkg, tasks[m]) for m in CHECK]
        theirs = [pool.submit(_pyhf_cls, bkg, stau_patch(bkg, *hand[m])) for m in CHECK]
        for m, a, b in zip(CHECK, ours, theirs, strict=True):
            (obs, exp), (p_obs, p_exp) = a.result(), b.result()
            assert obs == pytest.approx(p_obs, abs=1e-6) and exp == pytest.approx(p_exp, abs=1e-6), m
            assert obs == pytest.approx(refs[m]["obs"], abs=1e-3), m
            assert exp == pytest.approx(refs[m]["exp"], abs=1e-3), m


def _write_map(path, entries) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ",\n".join(f"[[[{a:.4E}*GeV,{b:.4E}*GeV],[{a:.4E}*GeV,{b:.4E}*GeV]],{e}]" for a, b, e in entries)
    path.write_text(f"txName: TX\nvalidated: True\nefficiencyMap: [{body}]\n")


@pytest.fixture
def toy(tmp_path):
    """Two regions; B lacks (300, 100); both cover the square 100..300 x 0..200."""
    grid = [(m1, m2) for m1 in (100.0, 200.0, 300.0) for m2 in (0.0, 100.0, 200.0)]
    _write_map(tmp_path / "A" / "TX.txt", [(a, b, 0.01 + a * 1e-4 + b * 1e-5) for a, b in grid])
    _write_map(tmp_path / "B" / "TX.txt", [(a, b, 0.02) for a, b in grid if (a, b) != (300.0, 100.0)])
    (tmp_path / "globalInfo.txt").write_text(
        "id: TOY\nlumi: 100/fb\njsonFiles: {'ws.json': [{'smodels': 'A', 'pyhf': 'SRA'},\n"
        "  {'smodels': 'B', 'pyhf': 'SRB'}, {'pyhf': 'CR', 'type': 'CR'}]}\n"
    )
    (tmp_path / "xs.yaml").write_text("100: 1.0\n250: 0.1\n")
    bkg = {
        "channels": [
            {"name": n, "samples": [{"name": "b", "data": [10.0], "modifiers": []}]}
            for n in ("CR", "SRA", "SRB")
        ],
        "observations": [{"name": n, "data": [10.0]} for n in ("CR", "SRA", "SRB")],
        "measurements": [{"name": "m", "config": {"poi": "mu_SIG", "parameters": []}}],
        "version": "1.0.0",
    }
    return tmp_path, bkg


def test_grid_is_the_union_with_zero_outside_a_maps_hull(toy) -> None:
    folder, bkg = toy
    _write_map(folder / "B" / "TX.txt", [(a, b, 0.02) for a in (100.0, 200.0) for b in (0.0, 100.0, 200.0)])
    (folder / "xs.yaml").write_text("100: 1.0\n300: 0.1\n")
    sec = {"type": "effmap", "path": str(folder), "xsec": "xs.yaml"}
    found = load_signal_points(sec, config_file="c.yaml", base_dir=folder, bkg_spec=bkg)
    assert found.skipped == []
    assert sorted(p.values for p in found.points) == [
        (m1, m2) for m1 in (100.0, 200.0, 300.0) for m2 in (0.0, 100.0, 200.0)
    ]
    assert found.outside_hull == 3  # B has no entry at m1 = 300: efficiency 0 there, not a skip
    sigma = CrossSectionTable((100.0, 300.0), (1.0, 0.1))
    for p in found.points:
        assert p.channels["SRA"].yields[0] == pytest.approx(
            sigma(p.values[0]) * 100e3 * (0.01 + p.values[0] * 1e-4 + p.values[1] * 1e-5), rel=1e-12
        )
        expected_b = sigma(p.values[0]) * 100e3 * 0.02 if p.values[0] < 300 else 1e-6
        assert p.channels["SRB"].yields[0] == pytest.approx(expected_b, rel=1e-12)
        assert set(p.channels) == {"SRA", "SRB"} and p.channels["SRA"].stat is None
    sec["on_xsec_range"] = "skip"
    (folder / "xs.yaml").write_text("100: 1.0\n250: 0.1\n")
    found = load_signal_points(sec, config_file="c.yaml", base_dir=folder, bkg_spec=bkg)
    assert [n for n, _ in found.skipped] == ["TX_300_0", "TX_300_100", "TX_300_200"]
    assert "outside the table [100, 250]" in found.skipped[0][1]


def test_requested_points_interpolate_inside_and_skip_outside(toy) -> None:
    folder, bkg = toy
    maps = {"SRA": read_effmap(folder / "A" / "TX.txt"), "SRB": read_effmap(folder / "B" / "TX.txt")}
    xs = CrossSectionTable((100.0, 400.0), (1.0, 0.1))
    res = effmap_yields(
        maps, xs, lumi_fb=1.0, points=[(150.0, 50.0), (350.0, 50.0), (200.0, -10.0)], floor=0.0
    )
    assert [p.values for p in res.points] == [(150.0, 50.0)]
    eff_a = 0.01 + 150 * 1e-4 + 50 * 1e-5  # linear map: interpolation is exact
    assert res.points[0].channels["SRA"].yields[0] == pytest.approx(xs(150.0) * 1e3 * eff_a, rel=1e-9)
    assert [n for n, _ in res.skipped] == ["350_50", "200_-10"]
    assert all("outside the efficiency map(s) of ['A', 'B'] (no extrapolation)" in r for _, r in res.skipped)


def test_floor_and_window(toy) -> None:
    folder, bkg = toy
    _write_map(folder / "B" / "TX.txt", [(100.0, 0.0, 0.0), (200.0, 0.0, 0.5)])
    sec = {"type": "effmap", "path": str(folder), "xsec": "xs.yaml", "window": {"m1": [150, 250]}}
    found = load_signal_points(
        sec, config_file="c.yaml", base_dir=folder, bkg_spec=bkg, parameters=["m1", "m2"]
    )
    assert [p.values for p in found.points] == [(200.0, 0.0), (200.0, 100.0), (200.0, 200.0)]
    assert found.points[1].channels["SRB"].yields == (1e-6,) and found.outside_hull == 2
    sec = {
        "type": "effmap",
        "path": str(folder),
        "xsec": "xs.yaml",
        "floor": 1e-3,
        "window": {"m1": [0, 150]},
    }
    found = load_signal_points(
        sec, config_file="c.yaml", base_dir=folder, bkg_spec=bkg, parameters=["m1", "m2"]
    )
    assert found.points[0].channels["SRB"].yields == (1e-3,)


def test_xsec_mass_outside_table_is_an_error_by_default(toy) -> None:
    folder, bkg = toy
    sec = {"type": "effmap", "path": str(folder), "xsec": "xs.yaml"}
    with pytest.raises(
        XsecRangeError, match=r"xs.yaml: point 'TX_300_0': cross-section mass 300 GeV outside"
    ):
        load_signal_points(sec, config_file="c.yaml", base_dir=folder, bkg_spec=bkg)


@pytest.mark.parametrize(
    "extra, key",
    [
        ({"xsec": None}, "signal.xsec"),
        ({"regions": {"A": "SRX"}}, "signal.regions"),
        ({"regions": {"C": "SRA"}}, "signal.regions.C"),
        ({"lumi": "lots"}, "signal.lumi"),
        ({"on_xsec_range": "maybe"}, "signal.on_xsec_range"),
        ({"xsec_mass": "m9"}, "signal.xsec_mass"),
        ({"colour": "red"}, "signal.colour"),
    ],
)
def test_config_errors_name_the_key(toy, extra, key) -> None:
    folder, bkg = toy
    sec = {"type": "effmap", "path": str(folder), "xsec": "xs.yaml", "on_xsec_range": "skip", **extra}
    with pytest.raises((ConfigError, InputError), match=rf"c.yaml: (key ')?{key}\b"):
        load_signal_points(sec, config_file="c.yaml", base_dir=folder, bkg_spec=bkg, parameters=["m1", "m2"])


def test_malformed_map_is_an_input_error(tmp_path) -> None:
    f = tmp_path / "A" / "TX.txt"
    f.parent.mkdir()
    f.write_text("txName: TX\nefficiencyMap: [[[[100*GeV, __import__('os')]], 0.1]]\n")
    with pytest.raises(InputError, match="efficiencyMap: unexpected characters"):
        read_effmap(f)
    f.write_text("txName: TX\nefficiencyMap: [[[[100*GeV, 0*GeV]], -0.1]]\n")
    with pytest.raises(InputError, match=r"efficiencyMap\[0\]: efficiency must be in \[0, 1\]"):
        read_effmap(f)


def test_parse_signal_gives_one_typed_spec_per_type(tmp_path) -> None:
    from pathlib import Path

    from recastfit.signals.spec import (
        EffmapSignal,
        PatchFolderSignal,
        PatchsetSignal,
        PointDef,
        RecastSignal,
        RootSignal,
        YieldsSignal,
        parse_signal,
    )

    def parse(**section):
        return parse_signal(
            section, file="c.yaml", parameters=["m1", "m2"], base_dir=Path("/b"), check_paths=False
        )

    assert parse(type="patchset") == PatchsetSignal(file="c.yaml")
    assert parse(type="patch_folder", path="p").path == Path("/b/p") and isinstance(
        parse(type="patch_folder"), PatchFolderSignal
    )
    y = parse(type="yields", path="y.json", regions={"a": "SRA"}, window={"m2": [0, 10]})
    assert isinstance(y, YieldsSignal) and y.regions == {"a": "SRA"} and y.window == ((1, 0.0, 10.0),)
    e = parse(type="effmap", path="maps", xsec="xs.json", lumi="3/ab", xsec_mass="m2", points=[[1, 2]])
    assert isinstance(e, EffmapSignal) and (e.lumi_fb, e.xsec_mass, e.floor) == (3000.0, 1, 1e-6)
    assert e.points == (PointDef("1_2", (1.0, 2.0), auto_name=True),) and e.xsec == Path("/b/xs.json")
    r = parse(type="root", path="h/{point}.root", points="pts.yaml")
    assert isinstance(r, RootSignal) and r.points == Path("/b/pts.yaml") and r.path == "h/{point}.root"
    rc = parse(type="recast", spec="s", points=[{"name": "a", "values": [1, 2]}], timeout=60)
    assert isinstance(rc, RecastSignal) and rc.timeout == 60.0 and rc.workflow == "workflow.yml"
    with pytest.raises(
        ConfigError, match=r"c.yaml: key 'signal.points\[0\].values': expected one value per grid"
    ):
        parse(type="recast", spec="s", points=[{"name": "a", "values": [1]}])
    with pytest.raises(ConfigError, match=r"key 'signal.window.m3': expected a grid parameter name"):
        parse(type="yields", path="y", window={"m3": [0, 1]})
    with pytest.raises(ConfigError, match=r"key 'signal.spec': expected an existing path \(a folder\)"):
        parse_signal(
            {"type": "recast", "spec": "nowhere", "points": [[1, 2]]},
            file="c.yaml",
            parameters=[],
            base_dir=tmp_path,
        )
