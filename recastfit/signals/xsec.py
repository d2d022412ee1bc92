"""Production cross-section tables, interpolated in log(sigma) between tabulated masses.

Formats read by :func:`load_xsec_table`:

- the LHC SUSY cross-section working-group JSON (``../shared/data/xsec``): ``{"data": {"<mass>":
  {"xsec_pb": .., "unc_up_pb": .., "unc_down_pb": ..}}, "process_latex": .., ...}``;
- a plain JSON/YAML mapping ``{<mass>: <xsec in pb>}``;
- a text/CSV table with columns ``mass xsec_pb [unc_up_pb unc_down_pb]`` (``#`` comments).

Masses outside the table raise :class:`XsecRangeError`; nothing is extrapolated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recastfit.errors import InputError
from recastfit.fileio import load_yaml_file, read_text_capped
from recastfit.signals.model import MAX_ABS

__all__ = ["CrossSectionTable", "XsecRangeError", "load_xsec_table"]


class XsecRangeError(InputError):
    """A mass outside the cross-section table (no extrapolation)."""


@dataclass(frozen=True)
class CrossSectionTable:
    """Cross section (pb) versus mass (GeV), with optional absolute up/down uncertainties (pb)."""

    masses: tuple[float, ...]
    xsec_pb: tuple[float, ...]
    unc_up_pb: tuple[float, ...] | None = None
    unc_down_pb: tuple[float, ...] | None = None
    source: str = "xsec"

    def __post_init__(self) -> None:
        if len(self.masses) < 1 or len(self.masses) != len(self.xsec_pb):
            raise InputError(self.source, "data", "expected one cross section per mass, at least one")
        if list(self.masses) != sorted(set(self.masses)):
            raise InputError(self.source, "data", "masses must be distinct (they are sorted on reading)")
        bad = [
            (m, s)
            for m, s in zip(self.masses, self.xsec_pb, strict=True)
            if not s > 0 or not math.isfinite(s)
        ]
        if bad:
            raise InputError(self.source, "data", f"cross sections must be finite and > 0, got {bad[:3]}")
        if self.unc_down_pb is not None and any(
            abs(d) >= s for d, s in zip(self.unc_down_pb, self.xsec_pb, strict=True)
        ):
            raise InputError(self.source, "data", "a down uncertainty must be smaller than its cross section")

    @property
    def range(self) -> tuple[float, float]:
        return self.masses[0], self.masses[-1]

    def _check(self, mass: float) -> None:
        lo, hi = self.range
        if not (lo <= mass <= hi) or not math.isfinite(mass):
            raise XsecRangeError(
                self.source,
                f"mass {mass:g}",
                f"outside the cross-section table [{lo:g}, {hi:g}] GeV (no extrapolation)",
            )

    def __call__(self, mass: float) -> float:
        """sigma(mass) in pb, interpolated linearly in log(sigma).

        >>> round(CrossSectionTable((100.0, 200.0), (1.0, 0.01))(150.0), 12)
        0.1
        """
        mass = float(mass)
        self._check(mass)
        logs = np.log(np.asarray(self.xsec_pb))
        return float(np.exp(np.interp(mass, np.asarray(self.masses), logs)))

    def relative_uncertainty(self, mass: float) -> tuple[float, float]:
        """(up, down) relative uncertainties at ``mass``, interpolated linearly; (0, 0) without them."""
        self._check(float(mass))
        if self.unc_up_pb is None or self.unc_down_pb is None:
            return 0.0, 0.0
        m = np.asarray(self.masses)
        rel_up = np.abs(np.asarray(self.unc_up_pb)) / np.asarray(self.xsec_pb)
        rel_dn = np.abs(np.asarray(self.unc_down_pb)) / np.asarray(self.xsec_pb)
        return float(np.interp(mass, m, rel_up)), float(np.interp(mass, m, rel_dn))


def _table(rows: list[tuple[float, ...]], source: str) -> CrossSectionTable:
    rows = sorted(rows)
    masses = tuple(r[0] for r in rows)
    xs = tuple(r[1] for r in rows)
    has_unc = all(len(r) >= 4 for r in rows)
    up = tuple(r[2] for r in rows) if has_unc else None
    dn = tuple(r[3] for r in rows) if has_unc else None
    return CrossSectionTable(masses, xs, up, dn, source)


def _float(source: str, key: str, value: object) -> float:
    """A finite number (|x| <= 1e15); a mass key may be a string. Booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(source, key, f"expected a number, got {str(value)[:80]!r}")
    try:
        x = float(value)
    except ValueError:
        raise InputError(source, key, f"expected a number, got {value[:80]!r}") from None
    if not math.isfinite(x) or abs(x) > MAX_ABS:
        raise InputError(source, key, f"expected a finite number (|x| <= {MAX_ABS:g}), got {value!r}")
    return x


def load_xsec_table(path: Path | str) -> CrossSectionTable:
    """Read a cross-section table (see the module docstring for the formats)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise InputError(source, None, "cross-section table not found")
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        data = load_yaml_file(path, what="cross-section table")
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            rows = []
            for mass, entry in data["data"].items():
                key = f"data.{mass}"
                if not isinstance(entry, dict) or "xsec_pb" not in entry:
                    raise InputError(source, key, f"expected a mapping with xsec_pb, got {entry!r}")
                row = [_float(source, key, mass), _float(source, f"{key}.xsec_pb", entry["xsec_pb"])]
                if "unc_up_pb" in entry and "unc_down_pb" in entry:
                    row += [
                        _float(source, f"{key}.unc_up_pb", entry["unc_up_pb"]),
                        _float(source, f"{key}.unc_down_pb", entry["unc_down_pb"]),
                    ]
                rows.append(tuple(row))
            return _table(rows, source)
        if isinstance(data, dict) and data:
            return _table(
                [(_float(source, str(m), m), _float(source, str(m), x)) for m, x in data.items()], source
            )
        raise InputError(source, "data", "expected {'data': {mass: {xsec_pb: ...}}} or {mass: xsec_pb}")
    rows = []
    text = read_text_capped(path, what="cross-section table")
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f for f in re.split(r"[,\s;]+", line) if f]
        try:
            rows.append(tuple(float(f) for f in fields))
        except ValueError:
            if not rows:  # a header line
                continue
            raise InputError(
                source, f"line {lineno}", f"expected numbers 'mass xsec_pb [up down]', got {line[:80]!r}"
            ) from None
        rows[-1] = tuple(_float(source, f"line {lineno}", v) for v in rows[-1])
        if len(rows[-1]) < 2:
            raise InputError(source, f"line {lineno}", f"expected at least 'mass xsec_pb', got {line!r}")
    if not rows:
        raise InputError(source, None, "no cross-section rows found")
    return _table(rows, source)
