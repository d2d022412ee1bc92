"""Signal yields from SModelS-style efficiency maps x cross section x luminosity.

An analysis folder in the SModelS database layout::

    <path>/globalInfo.txt          id, lumi (``139.0/fb``), jsonFiles (smodels region -> pyhf channel)
    <path>/<region>/<TxName>.txt   efficiencyMap: [[[[m1*GeV, m2*GeV], [m1*GeV, m2*GeV]], eff], ...]

Yield of region r at point m = sigma(m[xsec_mass]) [pb] x scale x lumi [pb^-1] x eff_r(m), floored
at ``floor`` (1e-6 by default, so an empty region never makes the model degenerate).

By default the grid is the set of mass points present in *every* region's map; points present in
only some maps are skipped and reported. Explicitly requested points are looked up exactly or
interpolated linearly inside the convex hull of each map (Delaunay, as SModelS does); a point
outside any map's hull is skipped and reported, never extrapolated.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recastfit.errors import InputError
from recastfit.signals.model import ChannelYields, PointYields
from recastfit.signals.xsec import CrossSectionTable, XsecRangeError

__all__ = [
    "EfficiencyMap",
    "GlobalInfo",
    "EffmapResult",
    "read_effmap",
    "read_global_info",
    "parse_lumi",
    "effmap_yields",
]

_HEADER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$")
_UNITS = {"GeV": 1.0, "TeV": 1000.0, "MeV": 1e-3}
_ALLOWED = (
    ast.Expression,
    ast.List,
    ast.Tuple,
    ast.Constant,
    ast.BinOp,
    ast.Mult,
    ast.UnaryOp,
    ast.USub,
    ast.Load,
)
_LUMI_UNITS = {"fb": 1.0, "pb": 1e-3, "ab": 1e3}  # /fb, /pb, /ab -> fb^-1


@dataclass(frozen=True)
class EfficiencyMap:
    """One region's efficiencies keyed by the grid coordinates (GeV)."""

    region: str
    txname: str
    values: dict[tuple[float, ...], float]
    source: str

    def lookup(self, point: tuple[float, ...]) -> float | None:
        """Efficiency at ``point``: exact, else linear inside the hull; ``None`` outside."""
        key = tuple(float(v) for v in point)
        if key in self.values:
            return self.values[key]
        coords = np.array(list(self.values), dtype=float)
        effs = np.array(list(self.values.values()), dtype=float)
        if coords.shape[1] != len(key):
            return None
        if coords.shape[1] == 1:
            x = coords[:, 0]
            if not x.min() <= key[0] <= x.max():
                return None
            order = np.argsort(x)
            return float(np.interp(key[0], x[order], effs[order]))
        from scipy.interpolate import LinearNDInterpolator
        from scipy.spatial import QhullError

        try:
            value = LinearNDInterpolator(coords, effs)(np.array([key]))[0]
        except QhullError:  # degenerate map (all points on a line): exact matches only
            return None
        return None if not np.isfinite(value) else float(value)


@dataclass(frozen=True)
class GlobalInfo:
    """What ``globalInfo.txt`` says: analysis id, luminosity (fb^-1), region -> pyhf channel."""

    id: str | None
    lumi_fb: float | None
    regions: dict[str, str]
    source: str


@dataclass
class EffmapResult:
    """Yields for the accepted points, and (name, reason) for each skipped point."""

    points: list[PointYields] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _headers(text: str) -> dict[str, str]:
    """``key: value`` blocks of an SModelS text file (a value runs on until the next key)."""
    out: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m and not line.startswith((" ", "\t", "[", "{")):
            key = m.group(1)
            out[key] = m.group(2)
        elif key is not None:
            out[key] += "\n" + line
    return out


def _mass(source: str, v: object) -> float:
    if isinstance(v, list | tuple):  # (mass, width) in newer SModelS formats
        v = v[0]
    if isinstance(v, int | float):
        return float(v)
    raise InputError(source, "efficiencyMap", f"expected a mass, got {v!r}")


def read_effmap(path: Path | str, region: str | None = None) -> EfficiencyMap:
    """Parse one SModelS efficiency-map file (``efficiencyMap: [[[[m*GeV, ...], ...], eff], ...]``)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise InputError(source, None, "efficiency-map file not found")
    headers = _headers(path.read_text())
    raw = headers.get("efficiencyMap")
    if raw is None:
        raise InputError(source, "efficiencyMap", "missing (is this an SModelS efficiency-map file?)")
    expr = re.sub(r"\*\s*(GeV|TeV|MeV)", lambda m: f"*{_UNITS[m.group(1)]!r}", raw)
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise InputError(source, "efficiencyMap", f"cannot parse: {exc}") from None
    for node in ast.walk(tree):  # only numbers, lists and unit products: safe to evaluate
        if not isinstance(node, _ALLOWED):
            raise InputError(source, "efficiencyMap", f"unexpected syntax {type(node).__name__}")
    data = eval(compile(tree, source, "eval"), {"__builtins__": {}}, {})
    if not isinstance(data, list):
        raise InputError(source, "efficiencyMap", "expected a list of [[masses...], efficiency] entries")
    values: dict[tuple[float, ...], float] = {}
    for i, entry in enumerate(data):
        try:
            branches, eff = entry
            branches = [[_mass(source, m) for m in b] for b in branches]
        except (TypeError, ValueError):
            raise InputError(
                source, f"efficiencyMap[{i}]", f"expected [[masses...], efficiency], got {entry!r}"
            ) from None
        coords = branches[0] if all(b == branches[0] for b in branches) else [m for b in branches for m in b]
        eff = float(eff)
        if not np.isfinite(eff) or eff < 0:
            raise InputError(source, f"efficiencyMap[{i}]", f"efficiency must be finite and >= 0, got {eff}")
        values[tuple(coords)] = eff
    if not values:
        raise InputError(source, "efficiencyMap", "empty")
    txname = headers.get("txName", path.stem).strip()
    return EfficiencyMap(region or path.parent.name, txname, values, source)


def parse_lumi(value: object, source: str = "lumi") -> float:
    """A luminosity in fb^-1 from ``139``, ``"139/fb"``, ``"139.0/fb"``, ``"139000/pb"`` or ``"0.139/ab"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        lumi = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(?:\*?\s*1?\s*/\s*(fb|pb|ab))?\s*", str(value))
        if not m:
            raise InputError(source, "lumi", f"expected e.g. 139 or '139/fb', got {value!r}")
        lumi = float(m.group(1)) * _LUMI_UNITS[m.group(2) or "fb"]
    if not lumi > 0:
        raise InputError(source, "lumi", f"must be > 0, got {value!r}")
    return lumi


def read_global_info(path: Path | str) -> GlobalInfo:
    """Parse ``globalInfo.txt``: ``id``, ``lumi`` and the ``jsonFiles`` region -> channel mapping."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise InputError(source, None, "globalInfo.txt not found")
    headers = _headers(path.read_text())
    lumi = parse_lumi(headers["lumi"].strip(), source) if "lumi" in headers else None
    regions: dict[str, str] = {}
    if "jsonFiles" in headers:
        try:
            files = ast.literal_eval(headers["jsonFiles"].strip())
        except (ValueError, SyntaxError) as exc:
            raise InputError(source, "jsonFiles", f"cannot parse: {exc}") from None
        for entries in files.values():
            for entry in entries:
                if isinstance(entry, dict) and "smodels" in entry and "pyhf" in entry:
                    regions[str(entry["smodels"])] = str(entry["pyhf"])
    gid = headers.get("id")
    return GlobalInfo(gid.strip() if gid else None, lumi, regions, source)


def _fmt(v: float) -> str:
    return f"{v:g}".replace(".", "p")


def effmap_yields(
    maps: Mapping[str, EfficiencyMap],
    xsec: CrossSectionTable,
    *,
    lumi_fb: float,
    xsec_mass: int = 0,
    xsec_scale: float = 1.0,
    floor: float = 1e-6,
    points: Sequence[Sequence[float]] | None = None,
    name_prefix: str = "",
    on_xsec_range: str = "error",
) -> EffmapResult:
    """Per-point yields for the channels of ``maps`` (channel -> map).

    Points come from ``points`` (looked up or interpolated inside each map's hull) or, by
    default, from the intersection of the maps' grids. A point missing from a map, or
    outside its hull, is skipped with a reason. A cross-section mass outside the table
    raises :class:`~recastfit.signals.xsec.XsecRangeError` (``on_xsec_range="skip"``: skipped
    and reported instead).
    """
    if on_xsec_range not in ("error", "skip"):
        raise ValueError(f"on_xsec_range must be 'error' or 'skip', got {on_xsec_range!r}")
    if not maps:
        raise InputError("effmap", "regions", "no efficiency maps")
    result = EffmapResult()
    lumi_pb = lumi_fb * 1000.0
    if points is None:
        grids = {ch: set(m.values) for ch, m in maps.items()}
        common = set.intersection(*grids.values())
        for p in sorted(set.union(*grids.values()) - common):
            missing = sorted(maps[ch].region for ch, g in grids.items() if p not in g)
            result.skipped.append((_name(name_prefix, p), f"not in the efficiency map(s) of {missing}"))
        wanted = sorted(common)
    else:
        wanted = [tuple(float(v) for v in p) for p in points]
    for p in wanted:
        name = _name(name_prefix, p)
        if not 0 <= xsec_mass < len(p):
            raise InputError("effmap", "xsec_mass", f"index {xsec_mass} out of range for point {p}")
        effs: dict[str, float] = {}
        outside = []
        for ch, emap in maps.items():
            eff = emap.lookup(p)
            if eff is None:
                outside.append(emap.region)
            else:
                effs[ch] = eff
        if outside:
            result.skipped.append((name, f"outside the efficiency map(s) of {outside} (no extrapolation)"))
            continue
        mass = p[xsec_mass]
        lo, hi = xsec.range
        if not lo <= mass <= hi:
            reason = f"cross-section mass {mass:g} GeV outside the table [{lo:g}, {hi:g}] (no extrapolation)"
            if on_xsec_range == "skip":
                result.skipped.append((name, reason))
                continue
            raise XsecRangeError(
                xsec.source, f"point '{name}'", reason + "; on_xsec_range: skip skips such points"
            )
        sigma = xsec(mass) * xsec_scale
        channels = {ch: ChannelYields((max(sigma * lumi_pb * e, floor),)) for ch, e in effs.items()}
        up, down = xsec.relative_uncertainty(mass)
        theory = (up, down) if up or down else None
        result.points.append(PointYields(name, tuple(p), channels, theory))
    return result


def _name(prefix: str, p: Sequence[float]) -> str:
    body = "_".join(_fmt(v) for v in p)
    return f"{prefix}_{body}" if prefix else body
