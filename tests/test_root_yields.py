"""Signal yields from ROOT histograms written here with uproot give the same patches as JSON yields."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from recastfit import demo
from recastfit.errors import InputError
from recastfit.patches import SignalOptions, build_patchset
from recastfit.signals import ChannelYields, PointYields, write_yields_file
from recastfit.signals.model import values_from_name
from recastfit.signals.root_hists import list_points, read_root_point, write_root_yields
from recastfit.signals.sources import load_signal_points

BKG = demo.background_workspace()
GRID = [(300.0, 0.0), (500.0, 100.0), (700.0, 300.0)]


def _patchset(points: list[PointYields], stat: str = "staterror") -> dict:
    return build_patchset(BKG, points, SignalOptions(stat=stat), parameters=demo.PARAMETERS)


def _load(section: dict, base) -> list[PointYields]:
    found = load_signal_points(section, config_file="c.yaml", base_dir=base, bkg_spec=BKG)
    return found.points


def test_numpy_histograms_without_errors_match_json(tmp_path) -> None:
    """TH1s written from (counts, edges) by uproot itself: yields only, no MC stat."""
    points = [
        PointYields(
            demo.point_name(m1, m2),
            (m1, m2),
            {ch: ChannelYields(cy.yields) for ch, cy in demo.signal_yields(m1, m2).items()},
        )
        for m1, m2 in GRID
    ]
    with uproot.recreate(tmp_path / "grid.root") as f:
        for p in points:
            for ch, cy in p.channels.items():
                f[f"{p.name}/{ch}"] = (np.array(cy.yields), np.arange(len(cy.yields) + 1.0))
    write_yields_file(tmp_path / "yields.json", points, demo.PARAMETERS)
    from_root = _load({"type": "root", "path": "grid.root"}, tmp_path)
    from_json = _load({"type": "yields", "path": "yields.json"}, tmp_path)
    assert [p.name for p in from_root] == sorted(p.name for p in points)
    assert all(cy.stat is None for p in from_root for cy in p.channels.values())
    by_name = {p.name: p for p in from_root}
    assert _patchset([by_name[p.name] for p in from_json]) == _patchset(from_json)


@pytest.mark.parametrize("stat", ["staterror", "shapesys"])
def test_per_point_files_with_errors_match_json(tmp_path, stat) -> None:
    """One ROOT file per point, TH1 per region with sumw2: yields and MC stat round-trip."""
    points = demo.demo_points(GRID)
    (tmp_path / "hists").mkdir()
    for p in points:
        write_root_yields(tmp_path / "hists" / f"{p.name}.root", [p], pattern="{region}")
    write_yields_file(tmp_path / "yields.json", points, demo.PARAMETERS)
    from_root = _load({"type": "root", "path": "hists/{point}.root"}, tmp_path)
    from_json = _load({"type": "yields", "path": "yields.json"}, tmp_path)
    assert from_root[0].channels["SRA"].stat == points[0].channels["SRA"].stat
    assert _patchset(from_root, stat) == _patchset(from_json, stat)
    assert {p.values for p in from_root} == set(GRID)


def test_region_mapping_and_histogram_pattern(tmp_path) -> None:
    p = demo.demo_points(GRID[:1])[0]
    renamed = PointYields(p.name, p.values, {f"h_{ch}": cy for ch, cy in p.channels.items()})
    write_root_yields(tmp_path / "a.root", [renamed], pattern="signal/{point}/{region}")
    regions = {"h_SRA": "SRA", "h_SRB": "SRB"}
    sec = {"type": "root", "path": "a.root", "histogram": "signal/{point}/{region}", "regions": regions}
    (got,) = _load(sec, tmp_path)
    assert got.channels == {"SRA": p.channels["SRA"], "SRB": p.channels["SRB"]}
    assert list_points(tmp_path / "a.root", "signal/{point}/{region}") == [p.name]


def test_errors(tmp_path) -> None:
    p = demo.demo_points(GRID[:1])[0]
    write_root_yields(tmp_path / "a.root", [p], pattern="{region}")
    with pytest.raises(
        InputError, match=r"a.root: point 'x': no TH1 for region\(s\) \['SRC'\] \(pattern '\{region\}'\)"
    ):
        read_root_point(tmp_path / "a.root", "x", (1.0, 2.0), regions={"SRC": "SRA"})
    bad = PointYields("neg", (1.0, 2.0), {"SRB": ChannelYields((-1.0,))})
    write_root_yields(tmp_path / "neg.root", [bad], pattern="{region}")
    with pytest.raises(InputError, match=r"neg.root: SRB: point 'neg': expected finite yields >= 0"):
        read_root_point(tmp_path / "neg.root", "neg", (1.0, 2.0))
    (tmp_path / "not.root").write_text("hello")
    with pytest.raises(InputError, match="not a readable ROOT file"):
        read_root_point(tmp_path / "not.root", "x", (1.0,))
    wrong = PointYields("w", (1.0, 2.0), {"SRA": ChannelYields((1.0, 2.0))})  # SRA has 4 bins
    write_root_yields(tmp_path / "w.root", [wrong], pattern="{region}")
    with pytest.raises(InputError, match="channel 'SRA'.*has 2 bins, the workspace channel has 4"):
        _patchset([read_root_point(tmp_path / "w.root", "w", (1.0, 2.0))])
    with pytest.raises(InputError, match=r"expected 2 numbers in the name"):
        values_from_name("demo_500", 2)
    assert values_from_name("ERJR_100p5_20p0", 2) == (100.5, 20.0)


def test_yields_source_renames_regions_and_names_the_key(tmp_path) -> None:
    p = demo.demo_points(GRID[:1])[0]
    raw = PointYields(p.name, p.values, {f"ana_{k}": v for k, v in p.channels.items()})
    write_yields_file(tmp_path / "y.yaml", [raw], demo.PARAMETERS)  # JSON text is valid YAML
    regions = {"ana_SRA": "SRA", "ana_SRB": "SRB", "ana_CR": "CR"}
    found = load_signal_points(
        {"type": "yields", "path": "y.yaml", "regions": regions},
        config_file="c.yaml",
        base_dir=tmp_path,
        bkg_spec=BKG,
    )
    assert found.points[0].channels == p.channels
    with pytest.raises(InputError, match=r"c.yaml: signal.path: point 'demo_300_0': channel\(s\) \['ana_CR'"):
        load_signal_points(
            {"type": "yields", "path": "y.yaml"}, config_file="c.yaml", base_dir=tmp_path, bkg_spec=BKG
        )
    with pytest.raises(InputError, match=r"region\(s\) \['ana_XX'\] missing"):
        load_signal_points(
            {"type": "yields", "path": "y.yaml", "regions": {"ana_XX": "SRA"}},
            config_file="c.yaml",
            base_dir=tmp_path,
            bkg_spec=BKG,
        )


def test_window_keeps_points_inside(tmp_path) -> None:
    write_yields_file(tmp_path / "y.json", demo.demo_points(), demo.PARAMETERS)
    sec = {"type": "yields", "path": "y.json", "window": {"m_parent": [200, 300], "m_LSP": [50, 1000]}}
    found = load_signal_points(
        sec, config_file="c.yaml", base_dir=tmp_path, bkg_spec=BKG, parameters=demo.PARAMETERS
    )
    assert [p.name for p in found.points] == ["demo_200_100", "demo_300_100", "demo_300_200"]
