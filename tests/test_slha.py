"""SLHA input: a folder of SLHA files (MASS + XSECTION blocks) gives the same patches as the
equivalent grid + cross-section table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recastfit.errors import ConfigError, InputError
from recastfit.patches import build_patchset
from recastfit.signals.slha import read_slha_point
from recastfit.signals.sources import load_signal_points
from recastfit.signals.spec import parse_signal
from recastfit.signals.xsec import load_xsec_table

pytest.importorskip("pyslha")

PARAMS = ["m_stau", "m_LSP"]
GRID = [(m1, m2) for m1 in (100.0, 150.0, 200.0, 250.0, 300.0) for m2 in (0.0, 20.0, 40.0, 60.0, 80.0)]
FINAL = [1000015, -1000015]


def _bkg() -> dict:
    return {
        "channels": [
            {"name": n, "samples": [{"name": "b", "data": [8.0], "modifiers": []}]} for n in ("SR1", "SR2")
        ],
        "observations": [{"name": n, "data": [8.0]} for n in ("SR1", "SR2")],
        "measurements": [{"name": "m", "config": {"poi": "mu_SIG", "parameters": []}}],
        "version": "1.0.0",
    }


def _slha(m1: float, m2: float, xsec_pb: float, *, extra: str = "") -> str:
    return (
        "BLOCK MASS\n"
        f"   1000015  {m1:.8e}   # stau_1\n"
        f"   1000022  {-m2:.8e}   # neutralino_1 (negative: a sign convention)\n"
        f"XSECTION  1.30E+04  2212 2212 2 {FINAL[0]} {FINAL[1]}\n"
        f"  0  0  0  0  0  0  {xsec_pb * 0.8:.17e} LO\n"
        f"  0  2  0  0  0  0  {xsec_pb:.17e} NLO+NLL\n"
        "XSECTION  8.00E+03  2212 2212 2 1000015 -1000015\n"
        f"  0  2  0  0  0  0  {xsec_pb / 3:.17e} at 8 TeV\n" + extra
    )


@pytest.fixture
def analysis(tmp_path) -> Path:
    """An SModelS-style folder (two regions, 25-point maps) and a cross-section table."""
    for region, scale in (("A", 1e-4), ("B", 2e-5)):
        body = ",\n".join(
            f"[[[{a}*GeV,{b}*GeV],[{a}*GeV,{b}*GeV]],{0.01 + a * scale + b * 1e-5}]" for a, b in GRID
        )
        (tmp_path / region).mkdir()
        (tmp_path / region / "TStauStau.txt").write_text(f"txName: TStauStau\nefficiencyMap: [{body}]\n")
    (tmp_path / "globalInfo.txt").write_text(
        "id: TOY\nlumi: 139.0/fb\njsonFiles: {'ws.json': [{'smodels': 'A', 'pyhf': 'SR1'}, "
        "{'smodels': 'B', 'pyhf': 'SR2'}]}\n"
    )
    table = {"data": {str(m): {"xsec_pb": 2.0 * (100.0 / m) ** 4} for m in (90, 130, 180, 260, 320)}}
    (tmp_path / "xsec.json").write_text(json.dumps(table))
    return tmp_path


def test_slha_folder_gives_the_same_patches_as_grid_plus_xsec(analysis) -> None:
    xsec = load_xsec_table(analysis / "xsec.json")
    slha_dir = analysis / "slha"
    slha_dir.mkdir()
    for i, (m1, m2) in enumerate(GRID):  # file names unrelated to the masses
        (slha_dir / f"scan_{i:04d}.slha").write_text(_slha(m1, m2, xsec(m1)))
    assert len(list(slha_dir.iterdir())) == 25
    base = {"type": "effmap", "path": str(analysis)}
    via_slha = {
        **base,
        "slha": "slha",
        "masses": {"m_stau": 1000015, "m_LSP": 1000022},
        "xsec_process": {"sqrts": 13000, "initial": [2212, 2212], "final": FINAL},
    }
    via_grid = {**base, "xsec": "xsec.json", "points": [list(g) for g in GRID]}
    bkg = _bkg()
    patches = []
    for section in (via_slha, via_grid):
        spec = parse_signal(section, file="c.yaml", parameters=PARAMS, base_dir=analysis)
        found = load_signal_points(spec, bkg_spec=bkg, parameters=PARAMS)
        assert len(found.points) == 25 and found.skipped == []
        ps = build_patchset(bkg, found.points, spec.options, parameters=PARAMS)
        patches.append({p["metadata"]["name"]: p for p in ps["patches"]})
    assert patches[0] == patches[1]
    assert set(patches[0]) == {f"TStauStau_{m1:g}_{m2:g}" for m1, m2 in GRID}
    sample = patches[0]["TStauStau_150_40"]["patch"][0]["value"]
    assert sample["data"] == [pytest.approx(xsec(150.0) * 139e3 * (0.01 + 150 * 1e-4 + 40 * 1e-5), rel=1e-12)]


def test_final_states_are_summed_and_sqrts_is_chosen(tmp_path) -> None:
    f = tmp_path / "p.slha"
    f.write_text(
        _slha(200.0, 50.0, 0.3, extra="XSECTION 1.30E+04 2212 2212 2 1000015 1000015\n  0 2 0 0 0 0 0.1 x\n")
    )
    p = read_slha_point(f, [1000015, 1000022], [FINAL, [1000015, 1000015]], sqrts=13000)
    assert p.values == (200.0, 50.0) and p.xsec_pb == pytest.approx(0.4, rel=1e-12) and p.theory is None
    assert read_slha_point(f, [1000015], [FINAL], sqrts=8000).xsec_pb == pytest.approx(0.1, rel=1e-12)
    scales = "".join(f"  0 2 0 {k} {k} 0 {0.3 * v} NLO\n" for k, v in ((0.5, 1.1), (2.0, 0.85)))
    f.write_text(_slha(200.0, 50.0, 0.3).replace("NLO+NLL\n", "NLO+NLL\n" + scales, 1))
    p = read_slha_point(f, [1000015, 1000022], [FINAL], sqrts=13000)
    assert p.xsec_pb == pytest.approx(0.3) and p.theory == pytest.approx((0.1, 0.15))
    with pytest.raises(InputError, match=r"p.slha: XSECTION 2212 2212 -> -1000024 1000023: missing"):
        read_slha_point(f, [1000015], [[1000023, -1000024]])
    with pytest.raises(InputError, match=r"p.slha: MASS 1000023: missing"):
        read_slha_point(f, [1000023], [FINAL])


def test_slha_settings_are_checked_at_config_load(analysis) -> None:
    base = {"type": "effmap", "path": str(analysis), "slha": "."}
    proc = {"final": FINAL}
    cases = [
        ({"masses": {"m_stau": 1000015, "m_LSP": 1000022}}, "signal.xsec_process"),
        ({"xsec_process": proc}, "signal.masses"),
        ({"masses": {"m_LSP": 1000022, "m_stau": 1000015}, "xsec_process": proc}, "signal.masses"),
        ({"masses": {"m_stau": True, "m_LSP": 1}, "xsec_process": proc}, "signal.masses.m_stau"),
        ({"masses": {"m_stau": 1, "m_LSP": 2}, "xsec_process": proc, "xsec": "xsec.json"}, "signal.xsec"),
        (
            {"masses": {"m_stau": 1, "m_LSP": 2}, "xsec_process": {"final": FINAL, "sqrt": 13}},
            "signal.xsec_process",
        ),
    ]
    for extra, key in cases:
        with pytest.raises(ConfigError, match=rf"c.yaml: key '{key}\b"):
            parse_signal({**base, **extra}, file="c.yaml", parameters=PARAMS, base_dir=analysis)
