"""Cross-section tables: log(sigma) interpolation, the formats read, and no extrapolation."""

from __future__ import annotations

import json
import math

import pytest

from recastfit.errors import InputError
from recastfit.signals.xsec import CrossSectionTable, XsecRangeError, load_xsec_table

STAU = "pp13_stau_LR_NLO+NLL_PDF4LHC.json"


def test_shared_stau_table_exact_and_log_interpolated(xsec_dir) -> None:
    data = json.loads((xsec_dir / STAU).read_text())["data"]
    table = load_xsec_table(xsec_dir / STAU)
    assert table.range == (50.0, 1000.0) and len(table.masses) == len(data)
    assert table(280.0) == pytest.approx(data["280"]["xsec_pb"], rel=1e-14)
    # halfway between two tabulated masses: the geometric mean (linear in log sigma)
    masses = sorted(float(m) for m in data)
    lo, hi = masses[10], masses[11]
    expected = math.sqrt(data[f"{lo:g}"]["xsec_pb"] * data[f"{hi:g}"]["xsec_pb"])
    assert table((lo + hi) / 2) == pytest.approx(expected, rel=1e-12)
    up, down = table.relative_uncertainty(280.0)
    assert up == pytest.approx(data["280"]["unc_up_pb"] / data["280"]["xsec_pb"], rel=1e-12)
    assert down == pytest.approx(-data["280"]["unc_down_pb"] / data["280"]["xsec_pb"], rel=1e-12)


@pytest.mark.parametrize("mass", [49.0, 1000.5, float("nan")])
def test_mass_outside_the_table_is_an_error(xsec_dir, mass) -> None:
    table = load_xsec_table(xsec_dir / STAU)
    with pytest.raises(XsecRangeError, match=r"outside the cross-section table \[50, 1000\]") as err:
        table(mass)
    assert STAU in str(err.value)


def test_text_and_mapping_formats(tmp_path) -> None:
    txt = tmp_path / "xs.txt"
    txt.write_text("# mass xsec_pb up down\nmass xsec\n100 1.0 0.1 -0.1\n300, 0.01, 0.002, -0.001\n")
    t = load_xsec_table(txt)
    assert t(200.0) == pytest.approx(0.1, rel=1e-12)
    assert t.relative_uncertainty(300.0) == pytest.approx((0.2, 0.1))
    yml = tmp_path / "xs.yaml"
    yml.write_text("300: 0.01\n100: 1.0\n")
    assert load_xsec_table(yml)(200.0) == pytest.approx(0.1, rel=1e-12)
    assert CrossSectionTable((100.0,), (2.0,))(100.0) == 2.0


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"data": {"100": {"xsec": 1}}}', r"data\.100: expected a mapping with xsec_pb"),
        ('{"data": {"100": {"xsec_pb": -1}}}', "cross sections must be finite and > 0"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_tables_name_file_and_key(tmp_path, text, match) -> None:
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        load_xsec_table(f)
    assert "bad.json" in str(err.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(InputError, match="cross-section table not found"):
        load_xsec_table(tmp_path / "nope.json")
