"""Signal yields from SModelS-style efficiency maps x cross section x luminosity.

An analysis folder of the SModelS database, as it is::

    <path>/globalInfo.txt          id, lumi (``139.0/fb``), jsonFiles_FullLikelihood / jsonFiles
    <path>/<region>/<TxName>.txt   efficiencyMap: [[[[m1*GeV, m2*GeV], [m1*GeV, m2*GeV]], eff], ...]

``jsonFiles_FullLikelihood`` (preferred) or ``jsonFiles`` maps each workspace file to its
regions, written as a list of names (SModelS region = pyhf channel) or of
``{'smodels': region, 'pyhf': channel, 'type': 'SR'|'CR'|...}``.

Yield of region r at point m = sigma(m) [pb] x scale x lumi [pb^-1] x eff_r(m), floored at
``floor`` (1e-6 by default, so an empty region never makes the model degenerate).

The default grid is the union of the maps' points. Each point is looked up exactly, or
interpolated linearly inside the convex hull of a region's map (Delaunay, as SModelS does);
where a region's map has no entry inside its hull the efficiency is 0 (counted and
reported, never extrapolated); a point outside every map is skipped and reported.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from recastfit.errors import InputError
from recastfit.fileio import read_text_capped
from recastfit.signals.model import MAX_ABS, ChannelYields, PointYields, format_value
from recastfit.signals.xsec import CrossSectionTable, XsecRangeError

__all__ = [
    "EfficiencyMap",
    "GlobalInfo",
    "EffmapResult",
    "read_effmap",
    "read_global_info",
    "parse_lumi",
    "effmap_yields",
    "effmap_name",
    "smodels_workspaces",
]

_HEADER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$")
_UNITS = {"GeV": 1.0, "TeV": 1000.0, "MeV": 1e-3}
_UNIT_NUMBER = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\*\s*(GeV|TeV|MeV)\b")
_MAP_CHARS = re.compile(r"^[\s\[\]\(\),0-9eE.+-]*$")  # numbers, brackets, commas: nothing to evaluate
_LUMI_UNITS = {"fb": 1.0, "pb": 1e-3, "ab": 1e3}  # /fb, /pb, /ab -> fb^-1


@dataclass(frozen=True)
class EfficiencyMap:
    """One region's efficiencies keyed by the grid coordinates (GeV)."""

    region: str
    txname: str
    values: dict[tuple[float, ...], float]
    source: str

    @cached_property
    def _interpolator(self):  # noqa: ANN202 - scipy object or None
        coords = np.array(list(self.values), dtype=float)
        effs = np.array(list(self.values.values()), dtype=float)
        if coords.shape[1] == 1:
            order = np.argsort(coords[:, 0])
            x, y = coords[order, 0], effs[order]
            return lambda pts: np.where(
                (pts[:, 0] >= x[0]) & (pts[:, 0] <= x[-1]), np.interp(pts[:, 0], x, y), np.nan
            )
        from scipy.interpolate import LinearNDInterpolator
        from scipy.spatial import QhullError

        try:
            return LinearNDInterpolator(coords, effs)
        except QhullError:  # degenerate map (all points on a line): exact matches only
            return None

    def lookup(self, point: Sequence[float]) -> float | None:
        """Efficiency at ``point``: exact, else linear inside the hull; ``None`` outside.

        >>> m = EfficiencyMap("SR", "T", {(100.0, 0.0): 0.1, (200.0, 0.0): 0.3, (200.0, 100.0): 0.5}, "t")
        >>> m.lookup((200.0, 0.0)), round(m.lookup((150.0, 0.0)), 12), m.lookup((100.0, 100.0))
        (0.3, 0.2, None)
        """
        return self.lookup_many([point])[0]

    def lookup_many(self, points: Sequence[Sequence[float]]) -> list[float | None]:
        """:meth:`lookup` for many points at once (one triangulation)."""
        out: list[float | None] = []
        todo: list[int] = []
        dim = len(next(iter(self.values)))
        for i, p in enumerate(points):
            key = tuple(float(v) for v in p)
            out.append(self.values.get(key) if len(key) == dim else None)
            if out[-1] is None and len(key) == dim:
                todo.append(i)
        interp = self._interpolator if todo else None
        if interp is not None:
            got = interp(np.array([points[i] for i in todo], dtype=float))
            for i, v in zip(todo, np.asarray(got, dtype=float).reshape(len(todo)), strict=True):
                out[i] = float(v) if np.isfinite(v) else None
        return out


@dataclass(frozen=True)
class GlobalInfo:
    """What ``globalInfo.txt`` says.

    ``workspaces``: workspace file -> {SModelS region: pyhf channel}, from
    ``jsonFiles_FullLikelihood`` when present (``full_likelihood`` True), else ``jsonFiles``.
    """

    id: str | None
    lumi_fb: float | None
    workspaces: dict[str, dict[str, str]]
    source: str
    full_likelihood: bool = False

    @property
    def regions(self) -> dict[str, str]:
        """Every region -> channel of every workspace (one workspace: its regions)."""
        return {r: ch for regions in self.workspaces.values() for r, ch in regions.items()}


@dataclass
class EffmapResult:
    """Yields for the accepted points, (name, reason) per skipped point, and how many
    (point, region) efficiencies were set to 0 because the point lies outside that region's map."""

    points: list[PointYields] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    outside_hull: int = 0


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


def _mass(v: object) -> float:
    if isinstance(v, list | tuple) and v:  # (mass, width) in newer SModelS formats
        v = v[0]
    if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) and abs(v) <= MAX_ABS:
        return float(v)
    raise ValueError(f"expected a finite mass, got {v!r}")


def _parse_map(raw: str, source: str) -> list:
    """The ``efficiencyMap`` value as nested lists, without evaluating anything.

    Units are multiplied out by a regular expression; what remains must be numbers,
    brackets and commas only (so ``[0]*30000000`` or a call is refused before any work).
    """
    body = _UNIT_NUMBER.sub(lambda m: repr(float(m.group(1)) * _UNITS[m.group(2)]), raw).strip()
    if not _MAP_CHARS.match(body):
        bad = sorted(set(re.sub(r"[\s\[\]\(\),0-9eE.+-]", "", body)))[:10]
        raise InputError(source, "efficiencyMap", f"unexpected characters {''.join(bad)!r}: expected numbers")
    try:
        return json.loads(body.replace("(", "[").replace(")", "]"))
    except (ValueError, RecursionError):
        pass
    try:
        data = ast.literal_eval(body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise InputError(source, "efficiencyMap", f"cannot parse: {exc}") from None
    if not isinstance(data, list):
        raise InputError(source, "efficiencyMap", "expected a list of [[masses...], efficiency] entries")
    return data


def read_effmap(path: Path | str, region: str | None = None) -> EfficiencyMap:
    """Parse one SModelS efficiency-map file (size-capped: ``limits.max_effmap_bytes``)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise InputError(source, None, "efficiency-map file not found")
    headers = _headers(read_text_capped(path, limit_name="max_effmap_bytes", what="efficiency-map file"))
    raw = headers.get("efficiencyMap")
    if raw is None:
        raise InputError(source, "efficiencyMap", "missing (is this an SModelS efficiency-map file?)")
    data = _parse_map(raw, source)
    if not isinstance(data, list):
        raise InputError(source, "efficiencyMap", "expected a list of [[masses...], efficiency] entries")
    values: dict[tuple[float, ...], float] = {}
    for i, entry in enumerate(data):
        try:
            branches, eff = entry
            branches = [[_mass(m) for m in b] for b in branches]
            if not branches or not all(branches):
                raise ValueError("no masses")
            if isinstance(eff, bool) or not isinstance(eff, int | float):
                raise ValueError("efficiency")
        except (TypeError, ValueError):
            raise InputError(
                source, f"efficiencyMap[{i}]", f"expected [[masses...], efficiency], got {str(entry)[:80]}"
            ) from None
        coords = branches[0] if all(b == branches[0] for b in branches) else [m for b in branches for m in b]
        eff = float(eff)
        if not np.isfinite(eff) or not 0 <= eff <= 1:
            raise InputError(source, f"efficiencyMap[{i}]", f"efficiency must be in [0, 1], got {eff}")
        key = tuple(coords)
        if key in values and values[key] != eff:
            raise InputError(source, f"efficiencyMap[{i}]", f"point {list(key)} given twice, with two values")
        values[key] = eff
    if not values:
        raise InputError(source, "efficiencyMap", "empty")
    if len({len(k) for k in values}) != 1:
        raise InputError(source, "efficiencyMap", "entries have different numbers of masses")
    txname = headers.get("txName", path.stem).strip()
    return EfficiencyMap(region or path.parent.name, txname, values, source)


def parse_lumi(value: object, source: str = "lumi") -> float:
    """A luminosity in fb^-1 from ``139``, ``"139/fb"``, ``"139.0/fb"``, ``"139000/pb"`` or ``"0.139/ab"``.

    >>> parse_lumi("139.0/fb"), parse_lumi("3/ab")
    (139.0, 3000.0)
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        lumi = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(?:\*?\s*1?\s*/\s*(fb|pb|ab))?\s*", str(value))
        try:
            lumi = float(m.group(1)) * _LUMI_UNITS[m.group(2) or "fb"] if m else float("nan")
        except ValueError:
            lumi = float("nan")
    if not (np.isfinite(lumi) and 0 < lumi <= MAX_ABS):
        raise InputError(source, "lumi", f"expected e.g. 139 or '139/fb' (> 0), got {value!r}")
    return lumi


def _json_files(source: str, key: str, text: str) -> dict[str, dict[str, str]]:
    try:
        files = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise InputError(source, key, f"cannot parse: {exc}") from None
    if not isinstance(files, dict) or not files:
        raise InputError(source, key, "expected {workspace file: [regions]}")
    out: dict[str, dict[str, str]] = {}
    for fname, entries in files.items():
        if not isinstance(fname, str) or not isinstance(entries, list | tuple):
            raise InputError(source, key, f"expected {{workspace file: [regions]}}, got {str(fname)[:80]!r}")
        regions: dict[str, str] = {}
        for entry in entries:
            if isinstance(entry, str):
                regions[entry] = entry
            elif isinstance(entry, dict) and isinstance(entry.get("pyhf"), str):
                smodels = entry.get("smodels")
                if isinstance(smodels, str):  # a region without an SModelS name has no map (e.g. a CR)
                    regions[smodels] = entry["pyhf"]
            else:
                raise InputError(
                    source, f"{key}.{fname}", f"expected region names or {{smodels, pyhf}}, got {entry!r}"
                )
        out[fname] = regions
    return out


def read_global_info(path: Path | str) -> GlobalInfo:
    """Parse ``globalInfo.txt``: ``id``, ``lumi`` and the workspace files with their regions."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise InputError(source, None, "globalInfo.txt not found")
    headers = _headers(read_text_capped(path, limit_name="max_effmap_bytes", what="globalInfo.txt"))
    lumi = parse_lumi(headers["lumi"].strip(), source) if "lumi" in headers else None
    full = "jsonFiles_FullLikelihood" in headers
    key = "jsonFiles_FullLikelihood" if full else "jsonFiles"
    workspaces = _json_files(source, key, headers[key]) if key in headers else {}
    gid = headers.get("id")
    return GlobalInfo(gid.strip() if gid else None, lumi, workspaces, source, full)


def smodels_workspaces(folder: Path | str) -> dict[Path, dict[str, str]]:
    """The workspace files an SModelS analysis folder declares, with their regions.

    From ``jsonFiles_FullLikelihood`` (preferred) or ``jsonFiles`` of ``globalInfo.txt``; any file
    name; one analysis per workspace. A named file that is missing, or a name that climbs
    out of the folder, is an :class:`InputError`; a folder without ``globalInfo.txt`` gives ``{}``.
    """
    from recastfit.fileio import inside

    folder = Path(folder)
    info_path = folder / "globalInfo.txt"
    if not info_path.is_file():
        return {}
    info = read_global_info(info_path)
    key = "jsonFiles_FullLikelihood" if info.full_likelihood else "jsonFiles"
    out: dict[Path, dict[str, str]] = {}
    for name, regions in info.workspaces.items():
        path = folder / name
        if not inside(path, folder) or not path.is_file():
            raise InputError(
                str(info_path), f"{key}.{name}", f"names a workspace file that is not in {folder}"
            )
        out[path] = regions
    return out


def effmap_name(prefix: str, p: Sequence[float]) -> str:
    """A point name: prefix and values (``p`` for the decimal point).

    >>> effmap_name("TChiWZ", (300.0, 12.5))
    'TChiWZ_300_12p5'
    """
    body = "_".join(format_value(v) for v in p)
    return f"{prefix}_{body}" if prefix else body


def effmap_yields(
    maps: Mapping[str, EfficiencyMap],
    xsec: CrossSectionTable | Mapping[tuple[float, ...], tuple[float, tuple[float, float] | None]],
    *,
    lumi_fb: float,
    xsec_mass: int = 0,
    xsec_scale: float = 1.0,
    floor: float = 1e-6,
    points: Sequence[Sequence[float]] | None = None,
    names: Sequence[str] | None = None,
    name_prefix: str = "",
    on_xsec_range: str = "error",
) -> EffmapResult:
    """Per-point yields for the channels of ``maps`` (channel -> map).

    Points come from ``points`` (with ``names``, else named from ``name_prefix`` and the
    values) or, by default, the union of the maps' grids. ``xsec`` is a table (evaluated at
    ``point[xsec_mass]``) or a mapping point -> (sigma in pb, (up, down) relative or None),
    e.g. read from SLHA files. A table mass outside the table raises
    :class:`~recastfit.signals.xsec.XsecRangeError` (``on_xsec_range="skip"``: skipped and
    reported instead).
    """
    if on_xsec_range not in ("error", "skip"):
        raise ValueError(f"on_xsec_range must be 'error' or 'skip', got {on_xsec_range!r}")
    if not maps:
        raise InputError("effmap", "regions", "no efficiency maps")
    result = EffmapResult()
    lumi_pb = lumi_fb * 1000.0
    if points is None:
        wanted = sorted(set().union(*(m.values for m in maps.values())))
    else:
        wanted = [tuple(float(v) for v in p) for p in points]
    labels = list(names) if names is not None else [effmap_name(name_prefix, p) for p in wanted]
    effs = {ch: emap.lookup_many(wanted) for ch, emap in maps.items()}
    for i, (p, name) in enumerate(zip(wanted, labels, strict=True)):
        outside = [maps[ch].region for ch in maps if effs[ch][i] is None]
        if len(outside) == len(maps):
            result.skipped.append((name, f"outside the efficiency map(s) of {outside} (no extrapolation)"))
            continue
        if isinstance(xsec, CrossSectionTable):
            if not 0 <= xsec_mass < len(p):
                raise InputError("effmap", "xsec_mass", f"index {xsec_mass} out of range for point {p}")
            mass = p[xsec_mass]
            lo, hi = xsec.range
            if not lo <= mass <= hi:
                reason = (
                    f"cross-section mass {mass:g} GeV outside the table [{lo:g}, {hi:g}] (no extrapolation)"
                )
                if on_xsec_range == "skip":
                    result.skipped.append((name, reason))
                    continue
                raise XsecRangeError(
                    xsec.source, f"point '{name}'", reason + "; on_xsec_range: skip skips such points"
                )
            sigma = xsec(mass)
            up, down = xsec.relative_uncertainty(mass)
            theory = (up, down) if up or down else None
        else:
            sigma, theory = xsec[p]
        sigma *= xsec_scale
        result.outside_hull += len(outside)
        channels = {ch: ChannelYields((max(sigma * lumi_pb * (effs[ch][i] or 0.0), floor),)) for ch in maps}
        result.points.append(PointYields(name, tuple(p), channels, theory))
    return result
