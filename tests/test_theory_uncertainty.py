"""Per-point signal theory uncertainty: from the cross-section table (efficiency maps) or the
yields file, added as a normsys when ``signal.options.theory_uncertainty: per_point``."""

from __future__ import annotations

import json

import pyhf
import pytest

from recastfit.config import parse_config
from recastfit.errors import ConfigError, InputError
from recastfit.infer.reference import hypotest_batch
from recastfit.patches import SignalOptions, build_patch, patchset_tasks
from recastfit.results import FitSettings
from recastfit.signals import read_yields_file
from recastfit.signals.sources import load_signal_points
from recastfit.signals.xsec import load_xsec_table
from tests.test_config import default


def test_effmap_points_carry_the_cross_section_uncertainty(stau_dir, xsec_dir) -> None:
    xsec = xsec_dir / "pp13_stau_LR_NLO+NLL_PDF4LHC.json"
    bkg = json.loads((stau_dir / "BkgOnly.json").read_text())
    section = {"type": "effmap", "path": str(stau_dir), "xsec": str(xsec)}
    found = load_signal_points(section, config_file="t.yaml", base_dir=stau_dir, bkg_spec=bkg)
    point = next(p for p in found.points if p.values == (280.0, 120.0))
    raw = json.loads(xsec.read_text())["data"]["280"]
    assert point.theory == pytest.approx(
        (raw["unc_up_pb"] / raw["xsec_pb"], abs(raw["unc_down_pb"]) / raw["xsec_pb"])
    )
    assert load_xsec_table(xsec).relative_uncertainty(280.0) == pytest.approx(point.theory)

    ops = build_patch(bkg, point, SignalOptions(theory_uncertainty="per_point"))
    normsys = [m for op in ops for m in op["value"]["modifiers"] if m["type"] == "normsys"]
    assert len(normsys) == len(ops) == 2  # one shared parameter, in both signal regions
    up, down = point.theory
    assert (
        normsys[0]
        == normsys[1]
        == {
            "name": "theory_signal",
            "type": "normsys",
            "data": {"hi": pytest.approx(1 + up), "lo": pytest.approx(1 - down)},
        }
    )
    plain = build_patch(bkg, point, SignalOptions())
    assert not [m for op in plain for m in op["value"]["modifiers"] if m["type"] == "normsys"]


def test_per_point_theory_from_a_yields_file_weakens_the_exclusion(tmp_path) -> None:
    bkg = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [10.0],
                        "modifiers": [
                            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
                        ],
                    }
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [10.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu_SIG", "parameters": []}}],
        "version": "1.0.0",
    }
    path = tmp_path / "y.yaml"
    path.write_text(
        "points:\n"
        "  - {name: A, values: [1], channels: {SR: [8.0]}, theory: [0.3, 0.25]}\n"
        "  - {name: B, values: [2], channels: {SR: [8.0]}}\n"
    )
    _, (a, b) = read_yields_file(path)
    assert a.theory == (0.3, 0.25) and b.theory is None
    from recastfit.patches import build_patchset

    with_theory = build_patchset(bkg, [a], SignalOptions(theory_uncertainty="per_point"), parameters=["m"])
    without = build_patchset(bkg, [a], SignalOptions(), parameters=["m"])
    (r1,) = hypotest_batch(bkg, patchset_tasks(with_theory), FitSettings())
    (r0,) = hypotest_batch(bkg, patchset_tasks(without), FitSettings())
    assert r1.cls_obs > r0.cls_obs + 1e-3  # an extra uncertainty can only weaken the exclusion
    model = pyhf.Workspace(bkg).model(patches=[patchset_tasks(with_theory)[0].patch])
    assert "theory_signal" in model.config.parameters


def test_bad_theory_values_are_named(tmp_path) -> None:
    path = tmp_path / "y.yaml"
    path.write_text("points:\n  - {name: A, values: [1], channels: {SR: [8.0]}, theory: [0.3, 1.5]}\n")
    with pytest.raises(InputError, match=r"points\[0\].theory: expected a relative uncertainty"):
        read_yields_file(path)
    cfg = default()
    cfg["signal"]["options"]["theory_uncertainty"] = "xsec"
    with pytest.raises(ConfigError, match="signal.options.theory_uncertainty"):
        parse_config(cfg, "c.yaml")
    cfg["signal"]["options"]["theory_uncertainty"] = "per_point"
    assert parse_config(cfg, "c.yaml").signal_options.theory_uncertainty == "per_point"
