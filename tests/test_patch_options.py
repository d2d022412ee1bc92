"""Patch-builder options on the demo workspace: shapesys/staterror, theory normsys, control-region
contamination, replacing a published signal, and the PatchSet's metadata."""

from __future__ import annotations

import math

import jsonpatch
import numpy as np
import pyhf
import pytest

from recastfit import demo
from recastfit.errors import InputError
from recastfit.patches import SignalOptions, build_patch, build_patchset
from recastfit.signals import ChannelYields, PointYields

BKG = demo.background_workspace()
POINT = demo.demo_points([(600.0, 100.0)])[0]  # near the expected exclusion boundary


def _model(patch: list[dict]) -> tuple[pyhf.pdf.Model, list[float]]:
    pyhf.set_backend("numpy", "scipy")
    ws = pyhf.Workspace(BKG)
    model = ws.model(patches=[patch])
    return model, ws.data(model)


def _cls(patch: list[dict]) -> float:
    model, data = _model(patch)
    return float(pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde"))


def _samples(spec: dict, channel: str) -> list[str]:
    return [s["name"] for c in spec["channels"] if c["name"] == channel for s in c["samples"]]


def test_shapesys_is_a_poisson_constraint_per_signal_bin() -> None:
    model, data = _model(build_patch(BKG, POINT, SignalOptions(stat="shapesys")))
    name = "shapesys_signal_SRA"
    assert name in model.config.parameters and model.config.param_set(name).n_parameters == 4
    # pyhf's shapesys auxdata = (nominal / sigma)^2; the demo's MC stat is 5 % -> 400 (to rounding)
    aux = np.asarray(model.config.auxdata)[model.config.auxdata_order.index(name) :][:4]
    assert aux == pytest.approx(
        [(y / s) ** 2 for y, s in zip(POINT.channels["SRA"].yields, POINT.channels["SRA"].stat, strict=True)]
    )
    assert all(abs(a - 400.0) < 1.0 for a in aux)
    assert 0.0 < float(pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde")) < 1.0


def test_staterror_is_shared_with_the_background() -> None:
    model, _ = _model(build_patch(BKG, POINT, SignalOptions(stat="staterror")))
    assert "staterror_signal_SRA" not in model.config.parameters
    sigmas = model.config.param_set("staterror_SRA").sigmas
    bkg = {s["name"]: s for s in BKG["channels"][1]["samples"]}
    for i, got in enumerate(sigmas):
        parts = [
            (bkg["ttbar"]["data"][i], 0.04),
            (bkg["wjets"]["data"][i], 0.06),
            (POINT.channels["SRA"].yields[i], None),
        ]
        abs2 = sum((n * r) ** 2 for n, r in parts if r) + POINT.channels["SRA"].stat[i] ** 2
        total = sum(n for n, _ in parts)
        assert got == pytest.approx(math.sqrt(abs2) / total, rel=1e-4), i


def test_theory_normsys_weakens_the_exclusion() -> None:
    base = _cls(build_patch(BKG, POINT, SignalOptions(stat="none")))
    opts = SignalOptions(stat="none", theory_uncertainty=0.3, theory_name="xsec_theory")
    patch = build_patch(BKG, POINT, opts)
    mods = [m for op in patch for m in op["value"]["modifiers"] if m["name"] == "xsec_theory"]
    assert len(mods) == 3 and mods[0] == {
        "name": "xsec_theory",
        "type": "normsys",
        "data": {"hi": 1.3, "lo": 0.7},
    }
    with_theory = _cls(patch)
    assert 0.0 < base < with_theory < 1.0, (base, with_theory)


def test_control_region_contamination() -> None:
    patched = build_patch(BKG, POINT, SignalOptions())
    assert [op["path"] for op in patched] == [
        "/channels/0/samples/0",
        "/channels/1/samples/0",
        "/channels/2/samples/0",
    ]
    model, _ = _model(patched)
    pars = model.config.suggested_init()
    expected = model.expected_actualdata(pars)
    bkg_cr = sum(s["data"][0] for s in BKG["channels"][0]["samples"])
    cr_slice = model.config.channel_slices["CR"]
    assert expected[cr_slice][0] == pytest.approx(bkg_cr + POINT.channels["CR"].yields[0])
    # near the boundary, a signal leaking into the CR pulls mu_ttbar down in the s+b fit: weaker
    # exclusion, growing with the contamination (CR: ~505 background events)
    near = demo.demo_points([(700.0, 300.0)])[0]
    cls = []
    for cr in (None, 10.0, 30.0):
        chans = {k: v for k, v in near.channels.items() if k != "CR"}
        if cr:
            chans["CR"] = ChannelYields((cr,))
        cls.append(_cls(build_patch(BKG, PointYields(near.name, near.values, chans), SignalOptions())))
    assert 0.09 < cls[0] < cls[1] - 0.005 < cls[2] - 0.01, cls


def test_replace_samples_removes_the_old_signal_everywhere() -> None:
    old = PointYields(
        "old", (0.0, 0.0), {ch: ChannelYields((1.0,) * n) for ch, n in (("CR", 1), ("SRA", 4), ("SRB", 1))}
    )
    published = jsonpatch.apply_patch(BKG, build_patch(BKG, old, SignalOptions(sample_name="old_signal")))
    assert all("old_signal" in _samples(published, c) for c in ("CR", "SRA", "SRB"))
    with pytest.raises(InputError, match="already has a sample 'old_signal'"):
        build_patch(published, old, SignalOptions(sample_name="old_signal"))
    opts = SignalOptions(replace_samples=("old_signal",), position=1)
    new_point = PointYields(POINT.name, POINT.values, {"SRA": POINT.channels["SRA"]})
    result = jsonpatch.apply_patch(published, build_patch(published, new_point, opts))
    for c in ("CR", "SRA", "SRB"):
        assert "old_signal" not in _samples(result, c)
    assert _samples(result, "SRA") == ["ttbar", "signal", "wjets", "other"]
    assert _samples(result, "SRB") == ["ttbar", "wjets", "other"]
    pyhf.Workspace(result).model()  # still a valid workspace


def test_patchset_metadata_and_pyhf_round_trip() -> None:
    points = demo.demo_points([(600.0, 100.0), (800.0, 0.0)])
    spec = build_patchset(
        BKG,
        points,
        SignalOptions(theory_uncertainty=0.1),
        parameters=demo.PARAMETERS,
        analysis_id="DEMO-2024-01",
        hepdata_record="ins1234567",
    )
    meta = spec["metadata"]
    assert meta["name"] == "DEMO-2024-01" and meta["labels"] == demo.PARAMETERS
    assert meta["digests"] == {"sha256": pyhf.utils.digest(BKG)} and meta["references"] == {
        "hepdata": "ins1234567"
    }
    assert [p["metadata"] for p in spec["patches"]] == [
        {"name": "demo_600_100", "values": [600.0, 100.0]},
        {"name": "demo_800_0", "values": [800.0, 0.0]},
    ]
    ps = pyhf.PatchSet(spec)
    ws = pyhf.Workspace(BKG)
    ps.verify(ws)
    patched = ps.apply(ws, [800.0, 0.0])
    assert "signal" in patched.samples
    other = pyhf.Workspace(
        demo.background_workspace()
        | {"observations": [{"name": c, "data": [1.0] * n} for c, n in (("CR", 1), ("SRA", 4), ("SRB", 1))]}
    )
    with pytest.raises(pyhf.exceptions.PatchSetVerificationError):
        ps.verify(other)


@pytest.mark.parametrize(
    "channels, match",
    [
        ({"SRC": ChannelYields((1.0,))}, r"point 'p', channel 'SRC': not in the workspace"),
        ({"SRA": ChannelYields((1.0, 2.0))}, r"channel 'SRA': has 2 bins, the workspace channel has 4"),
        ({"SRB": ChannelYields((-1.0,))}, r"channel 'SRB', yields: expected finite values >= 0"),
        (
            {"SRB": ChannelYields((math.nan,))},
            r"channel 'SRB', yields: expected finite values >= 0, got \[nan\]",
        ),
        ({"SRB": ChannelYields((1.0,), (1.0, 2.0))}, r"channel 'SRB', stat: has 2 entries, expected 1"),
    ],
)
def test_bad_yields_are_named(channels, match) -> None:
    with pytest.raises(InputError, match=match):
        build_patch(BKG, PointYields("p", (1.0, 2.0), channels), source="my_yields.json")
