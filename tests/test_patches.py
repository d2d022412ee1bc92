"""Yields -> patches: validated against the workspace, and equal to pyhf on a real pallet."""

from __future__ import annotations

import json
import math

import pyhf
import pytest

from recastfit.errors import InputError
from recastfit.infer.reference import hypotest_batch
from recastfit.patches import build_patch, build_patchset, patchset_tasks
from recastfit.results import FitSettings
from recastfit.signals import ChannelYields, PointYields, read_yields_file, write_yields_file
from tests.stau import reference, stau_grid, stau_patch

DEMO_BKG = {
    "channels": [
        {
            "name": "SR",
            "samples": [
                {
                    "name": "bkg",
                    "data": [5.0, 3.0],
                    "modifiers": [{"name": "lumi", "type": "lumi", "data": None}],
                }
            ],
        },
        {
            "name": "CR",
            "samples": [
                {"name": "bkg", "data": [50.0], "modifiers": [{"name": "lumi", "type": "lumi", "data": None}]}
            ],
        },
    ],
    "observations": [{"name": "SR", "data": [6.0, 2.0]}, {"name": "CR", "data": [52.0]}],
    "measurements": [
        {
            "name": "m",
            "config": {
                "poi": "mu_SIG",
                "parameters": [
                    {
                        "name": "lumi",
                        "auxdata": [1.0],
                        "sigmas": [0.02],
                        "bounds": [[0.9, 1.1]],
                        "inits": [1.0],
                    }
                ],
            },
        }
    ],
    "version": "1.0.0",
}


def point(**channels) -> PointYields:
    return PointYields("P1", (100.0, 10.0), {ch: ChannelYields(tuple(v)) for ch, v in channels.items()})


def test_stau_280_120_through_yields_file_matches_pyhf(tmp_path, stau_dir, xsec_dir) -> None:
    """Issue 2 acceptance: (280, 120) GeV via the yields-file source vs pyhf and the reference."""
    bkg = json.loads((stau_dir / "BkgOnly.json").read_text())
    grid = {(m1, m2): (y1, y2) for m1, m2, y1, y2 in stau_grid(stau_dir, xsec_dir)}
    y1, y2 = grid[(280.0, 120.0)]
    yields_file = tmp_path / "yields.json"
    write_yields_file(
        yields_file,
        [
            PointYields(
                "stau_280_120",
                (280.0, 120.0),
                {"SR1cut_cuts": ChannelYields((y1,)), "SR2cut_cuts": ChannelYields((y2,))},
            )
        ],
        ["m_stau", "m_LSP"],
    )
    params, points = read_yields_file(yields_file)
    spec = build_patchset(bkg, points, parameters=params, analysis_id="ATLAS-SUSY-2018-04")
    (task,) = patchset_tasks(spec)
    assert task.patch == stau_patch(bkg, y1, y2)
    (ours,) = hypotest_batch(bkg, [task], FitSettings())

    ws = pyhf.Workspace(bkg)
    model = ws.model(patches=[stau_patch(bkg, y1, y2)])
    obs, exp = pyhf.infer.hypotest(1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True)
    assert ours.status == "ok"
    assert ours.cls_obs == pytest.approx(float(obs), abs=1e-6)
    assert ours.cls_exp == pytest.approx([float(e) for e in exp], abs=1e-6)
    ref = reference(stau_dir)[(280.0, 120.0)]
    assert ours.cls_obs == pytest.approx(ref["obs"], abs=1e-3)
    assert ours.cls_exp == pytest.approx(ref["exp"], abs=1e-3)
    assert 0.0 <= ours.mu_hat < 0.1 and ours.cls_obs < 0.05


def test_patch_adds_normalised_signal_with_lumi_and_stat() -> None:
    p = PointYields("P1", (1.0,), {"SR": ChannelYields((1.0, 2.0), (0.1, 0.2))})
    (op,) = build_patch(DEMO_BKG, p)
    assert op["op"] == "add" and op["path"] == "/channels/0/samples/0"
    mods = {m["type"]: m for m in op["value"]["modifiers"]}
    assert mods["normfactor"]["name"] == "mu_SIG" and mods["lumi"]["name"] == "lumi"
    assert mods["staterror"] == {"name": "staterror_SR", "type": "staterror", "data": [0.1, 0.2]}
    model = pyhf.Workspace(DEMO_BKG).model(patches=[[op]])
    assert model.config.poi_name == "mu_SIG"
    expected = model.expected_actualdata(model.config.suggested_init())
    assert expected[model.config.channel_slices["SR"]].tolist() == [6.0, 5.0]


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        ({"SR": [1.0, 2.0], "VR": [1.0]}, "point 'P1', channel 'VR': not in the workspace"),
        ({"SR": [1.0]}, "point 'P1', channel 'SR': has 1 bins, the workspace channel has 2"),
        ({"SR": [1.0, -2.0]}, "point 'P1', channel 'SR', yields: expected finite values >= 0"),
        ({"SR": [1.0, math.nan]}, "expected finite values >= 0, got [nan]"),
        ({"CR": [math.inf]}, "point 'P1', channel 'CR', yields"),
    ],
)
def test_invalid_yields_name_point_and_channel(channels, message) -> None:
    with pytest.raises(InputError) as info:
        build_patchset(DEMO_BKG, [point(**channels)], parameters=["m1", "m2"], source="my_yields.json")
    assert str(info.value).startswith("my_yields.json: ")
    assert message in str(info.value)


def test_yields_file_errors(tmp_path) -> None:
    bad = tmp_path / "y.yaml"
    bad.write_text("points:\n  - name: A\n    values: [1, 2]\n    channels: {SR: [1.0, -1]}\n")
    with pytest.raises(InputError, match=r"y.yaml: points\[0\].channels.SR.yields: point 'A'"):
        read_yields_file(bad)
    bad.write_text("points:\n  - name: A\n    channels: {SR: {yields: [1, 2], stat: [0.1]}}\n")
    with pytest.raises(InputError, match="stat: has 1 entries but yields has 2"):
        read_yields_file(bad)
    bad.write_text("points:\n  - {name: A, channels: {SR: [1]}}\n  - {name: A, channels: {SR: [2]}}\n")
    with pytest.raises(InputError, match=r"points\[1\]: duplicate point names: 'A' \(same as points\[0\]\)"):
        read_yields_file(bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid YAML"):
        read_yields_file(bad)


def test_values_must_match_parameters() -> None:
    with pytest.raises(InputError, match="has 2 values, expected one per parameter"):
        build_patchset(DEMO_BKG, [point(SR=[1.0, 1.0])], parameters=["m1"])
