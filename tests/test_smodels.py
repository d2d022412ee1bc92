"""SModelS database folders as they are: globalInfo.txt in both forms, any workspace file name,
the union grid, and the real ATLAS-SUSY-2018-05-ewk folder against plain pyhf."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import yaml

from recastfit.config import load_config, parse_config
from recastfit.errors import ConfigError, InputError
from recastfit.pallet import load_workspace
from recastfit.patches import build_patchset, patchset_tasks
from recastfit.pipeline import signal_patchset
from recastfit.results import FitSettings, PatchTask
from recastfit.signals.effmap import read_effmap, read_global_info, smodels_workspaces
from recastfit.signals.sources import load_signal_points
from recastfit.signals.spec import parse_signal
from recastfit.signals.xsec import load_xsec_table
from tests.conftest import ROOT, SHARED, need_shared

EWK_CONFIG = ROOT / "workflows" / "config" / "2018-05-ewk.yaml"
EWK_DIR = SHARED / "data" / "pallets" / "ATLAS-SUSY-2018-05-ewk"
CHECK = [(600.0, 100.0), (800.0, 200.0), (900.0, 350.0)]


def _bkg(channels: list[str]) -> dict:
    return {
        "channels": [
            {"name": n, "samples": [{"name": "b", "data": [5.0], "modifiers": []}]} for n in channels
        ],
        "observations": [{"name": n, "data": [5.0]} for n in channels],
        "measurements": [{"name": "m", "config": {"poi": "mu_SIG", "parameters": []}}],
        "version": "1.0.0",
    }


def _folder(tmp_path: Path, global_info: str, regions: list[str]) -> Path:
    for r in regions:
        (tmp_path / r).mkdir()
        body = ",".join(f"[[[{m}*GeV,0*GeV],[{m}*GeV,0*GeV]],0.1]" for m in (100, 200))
        (tmp_path / r / "TX.txt").write_text(f"txName: TX\nefficiencyMap: [{body}]\n")
    (tmp_path / "globalInfo.txt").write_text("id: T\nlumi: 10/fb\n" + global_info)
    (tmp_path / "xs.json").write_text(json.dumps({"100": 1.0, "200": 0.5}))
    return tmp_path


def test_global_info_list_and_dict_forms_full_likelihood_preferred(tmp_path) -> None:
    f = tmp_path / "globalInfo.txt"
    f.write_text(
        "id: X\nlumi: 139.0/fb\n"
        "jsonFiles: {'simple.json': ['SR1', 'SR2']}\n"
        "jsonFiles_FullLikelihood: {'full_any_name.json': [\n"
        "   {'smodels': 'SR1', 'pyhf': 'SR1_cuts', 'type': 'SR'},\n"
        "   {'smodels': 'CR_ewk', 'pyhf': 'CRVV_cuts', 'type': 'CR'}, {'pyhf': 'CRtt', 'type': 'CR'}]}\n"
    )
    info = read_global_info(f)
    assert info.full_likelihood and info.lumi_fb == 139.0
    assert info.workspaces == {"full_any_name.json": {"SR1": "SR1_cuts", "CR_ewk": "CRVV_cuts"}}
    f.write_text("id: X\njsonFiles: {'simple.json': ['SR1', 'SR2']}\n")
    info = read_global_info(f)
    assert not info.full_likelihood and info.workspaces == {"simple.json": {"SR1": "SR1", "SR2": "SR2"}}


def test_smodels_workspaces_names_the_files_the_folder_declares(tmp_path) -> None:
    folder = _folder(tmp_path, "jsonFiles: {'a.json': ['SRA'], 'b_any_name.json': ['SRB']}\n", ["SRA", "SRB"])
    for name in ("a.json", "b_any_name.json"):
        (folder / name).write_text(json.dumps(_bkg(["SRA", "SRB"])))
    assert smodels_workspaces(folder) == {
        folder / "a.json": {"SRA": "SRA"},
        folder / "b_any_name.json": {"SRB": "SRB"},
    }
    (folder / "globalInfo.txt").write_text("jsonFiles: {'../../etc/passwd': ['SRA']}\n")
    with pytest.raises(
        InputError, match=r"jsonFiles.../../etc/passwd: names a workspace file that is not in"
    ):
        smodels_workspaces(folder)
    assert smodels_workspaces(folder / "SRA") == {}
    if EWK_DIR.is_dir():
        (ws,) = smodels_workspaces(EWK_DIR)
        assert ws.name == "ewk_signal_bkgonly.json"


def test_patches_step_reports_zero_efficiencies(tmp_path, capsys) -> None:
    """pipeline.signal_patchset on an effmap whose regions cover different grids."""
    folder = _folder(tmp_path, "jsonFiles: {'ws.json': ['SRA', 'SRB']}\n", ["SRA", "SRB"])
    (folder / "SRB" / "TX.txt").write_text("txName: TX\nefficiencyMap: [[[[100*GeV,0*GeV]],0.3]]\n")
    (folder / "ws.json").write_text(json.dumps(_bkg(["SRA", "SRB"])))
    cfg = parse_config(
        {
            "analysis": "toy",
            "pallet": {"source": str(folder)},
            "signal": {"type": "effmap", "path": str(folder), "xsec": str(folder / "xs.json")},
            "grid": {"parameters": ["m1", "m2"]},
        },
        "c.yaml",
    )
    spec = signal_patchset(cfg, {"selected": {"workspace": str(folder / "ws.json")}})
    assert [p["metadata"]["name"] for p in spec["patches"]] == ["TX_100_0", "TX_200_0"]
    assert spec["patches"][1]["patch"][1]["value"]["data"] == [1e-6]  # SRB: outside its one-point map
    captured = capsys.readouterr()
    assert "1 (point, region) efficiencies set to 0" in captured.out + captured.err


def test_several_workspaces_pick_by_channels_or_by_key(tmp_path) -> None:
    folder = _folder(tmp_path, "jsonFiles: {'a.json': ['SRA'], 'b.json': ['SRB']}\n", ["SRA", "SRB"])
    sec = {"type": "effmap", "path": str(folder), "xsec": "xs.json"}
    spec = parse_signal(sec, file="c.yaml", parameters=["m1", "m2"], base_dir=folder)
    found = load_signal_points(spec, bkg_spec=_bkg(["SRB"]), parameters=["m1", "m2"])
    assert [set(p.channels) for p in found.points] == [{"SRB"}, {"SRB"}]
    assert found.points[1].channels["SRB"].yields[0] == pytest.approx(0.5 * 10e3 * 0.1)
    with pytest.raises(
        ConfigError, match=r"signal.workspace': expected which workspace file .*\['a.json', 'b.json'\]"
    ):
        load_signal_points(spec, bkg_spec=_bkg(["SRA", "SRB"]), parameters=["m1", "m2"])
    spec = parse_signal(
        {**sec, "workspace": "a.json"}, file="c.yaml", parameters=["m1", "m2"], base_dir=folder
    )
    found = load_signal_points(spec, bkg_spec=_bkg(["SRA", "SRB"]), parameters=["m1", "m2"])
    assert set(found.points[0].channels) == {"SRA"}
    spec = parse_signal(
        {**sec, "workspace": "c.json"}, file="c.yaml", parameters=["m1", "m2"], base_dir=folder
    )
    with pytest.raises(ConfigError, match=r"signal.workspace': expected one of the workspace files"):
        load_signal_points(spec, bkg_spec=_bkg(["SRA", "SRB"]), parameters=["m1", "m2"])


def _ewk_spec(**extra):
    raw = yaml.safe_load(EWK_CONFIG.read_text())
    load_config(EWK_CONFIG)  # the whole config is schema-valid
    section = {**raw["signal"], **extra}
    return raw, parse_signal(
        section, file=str(EWK_CONFIG), parameters=raw["grid"]["parameters"], base_dir=ROOT
    )


def test_ewk_folder_default_grid_is_the_union_with_every_region() -> None:
    need_shared(EWK_DIR)
    raw, spec = _ewk_spec()
    bkg = load_workspace(EWK_DIR / "ewk_signal_bkgonly.json")  # named by jsonFiles_FullLikelihood
    found = load_signal_points(spec, bkg_spec=bkg, parameters=raw["grid"]["parameters"])
    info = read_global_info(EWK_DIR / "globalInfo.txt")
    (regions,) = info.workspaces.values()
    assert len(regions) == 13 and set(regions.values()) <= {c["name"] for c in bkg["channels"]}
    maps = {r: read_effmap(EWK_DIR / r / "TChiWZ.txt") for r in regions}
    union = set().union(*(m.values for m in maps.values()))
    assert len(found.points) == len(union) == 114 and found.skipped == []
    xsec = load_xsec_table(Path(spec.xsec))
    p = next(p for p in found.points if p.values == (800.0, 200.0))
    assert p.name == "TChiWZ_800_200" and set(p.channels) == set(regions.values())
    for region, channel in regions.items():
        expected = max(xsec(800.0) * 139e3 * maps[region].values[(800.0, 200.0)], 1e-6)
        assert p.channels[channel].yields[0] == pytest.approx(expected, rel=1e-12)


def _pyhf_cls(bkg: dict, patch: list[dict]) -> tuple[float, list[float]]:
    import pyhf
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    pyhf.set_backend("numpy", "scipy")
    ws = pyhf.Workspace(bkg)
    model = ws.model(patches=[patch])
    obs, exp = pyhf.infer.hypotest(1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True)
    return float(obs), [float(e) for e in exp]


def _ours(bkg: dict, tasks: list[PatchTask], engine: str) -> list[tuple[float, list[float]]]:
    from threadpoolctl import threadpool_limits

    from recastfit.infer import hypotest_batch

    threadpool_limits(1)
    return [(r.cls_obs, r.cls_exp) for r in hypotest_batch(bkg, tasks, FitSettings(engine=engine))]


def test_ewk_cls_match_plain_pyhf_at_three_points() -> None:
    """The config's engine (fast) on three patches built from the folder vs pyhf.infer.hypotest."""
    need_shared(EWK_DIR)
    raw, spec = _ewk_spec(points=[list(m) for m in CHECK])
    bkg = load_workspace(EWK_DIR / "ewk_signal_bkgonly.json")
    params = raw["grid"]["parameters"]
    found = load_signal_points(spec, bkg_spec=bkg, parameters=params)
    assert [p.values for p in found.points] == CHECK
    tasks = patchset_tasks(build_patchset(bkg, found.points, spec.options, parameters=params))
    # spawn, not fork: forking a process that already runs JAX's threads can deadlock the child
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        ours = pool.submit(_ours, bkg, tasks, raw["fit"]["engine"])
        theirs = [pool.submit(_pyhf_cls, bkg, t.patch) for t in tasks]
        for m, (obs, exp), ref in zip(CHECK, ours.result(), theirs, strict=True):
            p_obs, p_exp = ref.result()
            assert obs == pytest.approx(p_obs, abs=1e-3), m
            assert exp == pytest.approx(p_exp, abs=1e-3), m
    assert 0.01 < p_obs < 0.2  # (900, 350) sits near the exclusion line: a meaningful comparison
