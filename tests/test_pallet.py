"""Loading pallets: legacy patch folders become PatchSets; bad files give named errors."""

from __future__ import annotations

import json

import pyhf
import pytest

from recastfit.errors import InputError
from recastfit.pallet import legacy_patchset, load_patchset, load_workspace
from recastfit.signals.model import values_from_name


def test_erjr_legacy_patches_become_a_patchset(erjr_dir) -> None:
    bkg = load_workspace(erjr_dir / "BkgOnly.json")
    spec = legacy_patchset(erjr_dir / "patches", bkg, ["m_C1N2", "m_N1"])
    patchset = pyhf.PatchSet(spec)
    patchset.verify(bkg)
    assert len(patchset.patches) == 66
    assert patchset.labels == ["m_C1N2", "m_N1"]
    files = sorted(p.name for p in (erjr_dir / "patches").glob("patch.ERJR_*.json"))
    expected = {}
    for f in files:
        m1, m2 = f.removeprefix("patch.ERJR_").removesuffix(".json").split("_")
        expected[(float(m1.replace("p", ".")), float(m2.replace("p", ".")))] = f
    assert {tuple(p.values) for p in patchset.patches} == set(expected)
    p = patchset[(100.0, 20.0)]
    assert p.name == "ERJR_100p0_20p0"
    assert p.patch == json.loads((erjr_dir / "patches" / "patch.ERJR_100p0_20p0.json").read_text())
    assert patchset[(500.0, 300.0)].name == "ERJR_500p0_300p0"


def test_values_from_name() -> None:
    assert values_from_name("ERJR_100p0_20p0", 2) == (100.0, 20.0)
    assert values_from_name("C1N2_WZ_350_150", 2) == (350.0, 150.0)
    assert values_from_name("grid-x12.5-y3", 2, pattern=r"x([\d.]+)-y([\d.]+)") == (12.5, 3.0)
    with pytest.raises(InputError, match=r"point 'a_1_2_3': expected 2 numbers .* found \[1.0, 2.0, 3.0\]"):
        values_from_name("a_1_2_3", 2)


def test_bad_legacy_names_and_patches(tmp_path, erjr_dir) -> None:
    bkg = load_workspace(erjr_dir / "BkgOnly.json")
    (tmp_path / "patch.point_one.json").write_text("[]")
    with pytest.raises(InputError, match=r"patch.point_one.json: point 'point_one': expected 2 numbers"):
        legacy_patchset(tmp_path, bkg, ["m1", "m2"])
    (tmp_path / "patch.point_one.json").unlink()
    (tmp_path / "patch.P_1_2.json").write_text('{"op": "add"}')
    with pytest.raises(InputError, match="expected a JSON list of RFC 6902 operations"):
        legacy_patchset(tmp_path, bkg, ["m1", "m2"])
    with pytest.raises(InputError, match="no patch.<name>.json files"):
        legacy_patchset(tmp_path / "empty", bkg, ["m1"])


def test_workspace_and_patchset_validation(tmp_path, erjr_dir) -> None:
    bad = tmp_path / "BkgOnly.json"
    bad.write_text(json.dumps({"channels": [], "version": "1.0.0"}))
    with pytest.raises(InputError, match="BkgOnly.json.*invalid"):
        load_workspace(bad)
    bad.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_workspace(bad)
    bkg = load_workspace(erjr_dir / "BkgOnly.json")
    spec = legacy_patchset(erjr_dir / "patches", bkg, ["m1", "m2"])
    spec["metadata"]["digests"]["sha256"] = "0" * 64
    ps = tmp_path / "patchset.json"
    ps.write_text(json.dumps(spec))
    with pytest.raises(InputError, match="metadata.digests: does not match the background workspace"):
        load_patchset(ps, bkg)
