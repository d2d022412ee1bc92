"""Pallet discovery: single, prefixed, sub-folder and legacy layouts, validated by pyhf."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyhf
import pytest

from recastfit.errors import FetchError, InputError
from recastfit.hepdata import FoundAnalysis, discover, select


def make_patchset(bkg_file: Path, patch_files: list[Path]) -> dict:
    """A pyhf PatchSet built from legacy RFC 6902 patch files (name from patch.<name>.json)."""
    bkg = json.loads(bkg_file.read_text())
    patches = []
    for pf in patch_files:
        name = pf.name[len("patch.") : -len(".json")].replace(".", "_")
        m1, m2 = (float(x.replace("p", ".")) for x in name.split("_")[1:3])
        patches.append({"metadata": {"name": name, "values": [m1, m2]}, "patch": json.loads(pf.read_text())})
    return {
        "metadata": {
            "description": "test patchset",
            "digests": {"sha256": pyhf.utils.digest(bkg)},
            "labels": ["m1", "m2"],
            "references": {"hepdata": "ins1234567"},
        },
        "patches": patches,
        "version": "1.0.0",
    }


@pytest.fixture
def multi(tmp_path, erjr_dir):
    """Prefixed pair + sub-folder pair + a legacy folder, in one tree."""
    root = tmp_path / "pallet"
    root.mkdir()
    patches = sorted((erjr_dir / "patches").glob("patch.*.json"))[:2]
    shutil.copy(erjr_dir / "BkgOnly.json", root / "Rpc2L0b_BkgOnly.json")
    (root / "Rpc2L0b_patchset.json").write_text(json.dumps(make_patchset(erjr_dir / "BkgOnly.json", patches)))
    sub = root / "Region-combined"
    sub.mkdir()
    shutil.copy(erjr_dir / "BkgOnly.json", sub / "BkgOnly.json")
    (sub / "patchset.json").write_text(json.dumps(make_patchset(erjr_dir / "BkgOnly.json", patches)))
    legacy = root / "legacy"
    (legacy / "patches").mkdir(parents=True)
    shutil.copy(erjr_dir / "BkgOnly.json", legacy / "BkgOnly.json")
    for pf in patches:
        shutil.copy(pf, legacy / "patches" / pf.name)
    (root / "README.md").write_text("not a workspace")
    return root


def test_stau_folder_without_patchset(stau_dir):
    (found,) = discover(stau_dir)
    assert found == FoundAnalysis("ATLAS-SUSY-2018-04-staus", stau_dir / "BkgOnly.json", None, None)


def test_legacy_patch_folder(erjr_dir):
    (found,) = discover(erjr_dir)
    assert found.name == "3L-eRJR"
    assert found.patchset is None
    assert found.patch_dir == erjr_dir / "patches"
    assert len(list(found.patch_dir.glob("patch.*.json"))) == 66


def test_multi_analysis_tree(multi):
    found = discover(multi)
    assert [a.name for a in found] == ["Region-combined", "Rpc2L0b", "legacy"]
    by = {a.name: a for a in found}
    assert by["Rpc2L0b"].workspace == multi / "Rpc2L0b_BkgOnly.json"
    assert by["Rpc2L0b"].patchset == multi / "Rpc2L0b_patchset.json"
    assert by["Region-combined"].patchset == multi / "Region-combined" / "patchset.json"
    assert by["legacy"].patch_dir == multi / "legacy" / "patches" and by["legacy"].patchset is None
    d = by["Rpc2L0b"].to_dict()
    assert d == {
        "name": "Rpc2L0b",
        "workspace": str(multi / "Rpc2L0b_BkgOnly.json"),
        "patchset": str(multi / "Rpc2L0b_patchset.json"),
        "patch_dir": None,
    }


def test_select(multi):
    found = discover(multi, validate=False)
    assert select(found, "Rpc2L0b").name == "Rpc2L0b"
    assert select(found, "region-combined").name == "Region-combined"
    with pytest.raises(FetchError) as err:
        select(found, None)
    assert "Region-combined" in str(err.value) and "Rpc2L0b" in str(err.value) and "legacy" in str(err.value)
    with pytest.raises(FetchError, match=r"analysis 'nope' not found.*Rpc2L0b"):
        select(found, "nope")
    with pytest.raises(FetchError, match="no pallet found"):
        select([], None)
    assert select(found[:1], None) is found[0]


def test_nested_prefixed_name(tmp_path, erjr_dir):
    sub = tmp_path / "p" / "SR"
    sub.mkdir(parents=True)
    shutil.copy(erjr_dir / "BkgOnly.json", sub / "A_BkgOnly.json")
    assert [a.name for a in discover(tmp_path / "p")] == ["SR/A"]


def test_invalid_workspace_named(tmp_path):
    (tmp_path / "BkgOnly.json").write_text(json.dumps({"channels": [{"name": "c"}]}))
    with pytest.raises(InputError, match=r"BkgOnly\.json.*not a valid pyhf workspace"):
        discover(tmp_path)
    (tmp_path / "BkgOnly.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        discover(tmp_path)


def test_invalid_patchset_and_patch_named(multi):
    ps = multi / "Rpc2L0b_patchset.json"
    spec = json.loads(ps.read_text())
    del spec["metadata"]["digests"]
    ps.write_text(json.dumps(spec))
    with pytest.raises(InputError, match=r"Rpc2L0b_patchset\.json.*not a valid pyhf PatchSet"):
        discover(multi)
    ps.write_text(json.dumps(make_patchset(multi / "Rpc2L0b_BkgOnly.json", [])))  # no patches: invalid
    with pytest.raises(InputError, match="PatchSet"):
        discover(multi)
    ps.unlink()
    bad = next((multi / "legacy" / "patches").glob("patch.*.json"))
    bad.write_text(json.dumps([{"op": "explode", "path": "/x"}]))
    with pytest.raises(InputError, match=f"{bad.name}.*not a valid JSON Patch"):
        discover(multi)


def test_missing_folder(tmp_path):
    with pytest.raises(FetchError, match="does not exist"):
        discover(tmp_path / "nope")
