"""Yields files (JSON or YAML): ``{"parameters": [...], "points": [{name, values, channels}]}``.

Each channel entry is ``{"yields": [per bin], "stat": [per bin, optional]}`` or just the list of
yields. A single-point file (``{name, values, channels}``, as written per point by the
``recast`` rule) is accepted too. Files are read size-capped with the alias-free YAML loader
(:mod:`recastfit.fileio`); numbers must be finite, >= 0 and <= 1e15 (booleans are not numbers),
names follow :mod:`recastfit.names`, and names and value tuples are distinct.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from recastfit.errors import InputError
from recastfit.fileio import load_yaml_file, write_json_atomic
from recastfit.names import check_name
from recastfit.signals.model import MAX_ABS, ChannelYields, PointYields, invalid_yields

__all__ = ["read_yields_file", "write_yields_file", "parse_point", "read_points_file"]


def _numbers(file: str, key: str, raw: Any, *, allow_empty: bool = False) -> tuple[float, ...]:
    if not isinstance(raw, list | tuple) or (not raw and not allow_empty):
        raise InputError(file, key, f"expected a non-empty list of numbers, got {_short(raw)}")
    bad = [v for v in raw if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        raise InputError(file, key, f"expected numbers (booleans are not numbers), got {_short(bad[0])}")
    values = tuple(float(v) for v in raw)
    bad_f = [v for v in values if not math.isfinite(v) or abs(v) > MAX_ABS]
    if bad_f:
        raise InputError(file, key, f"expected finite numbers (|x| <= {MAX_ABS:g}), got {bad_f[0]}")
    return values


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_point(file: str, raw: Any, where: str) -> PointYields:
    """One point record -> :class:`PointYields`; ``where`` locates it in error messages."""
    if not isinstance(raw, dict):
        raise InputError(file, where, f"expected a mapping with name/values/channels, got {_short(raw)}")
    for key in ("name", "channels"):
        if key not in raw:
            raise InputError(file, f"{where}.{key}", "missing")
    name = check_name(raw["name"], file=file, key=f"{where}.name")
    values = _numbers(file, f"{where}.values", raw.get("values", []) or [0.0])
    channels = raw["channels"]
    if not isinstance(channels, dict) or not channels:
        raise InputError(file, f"{where}.channels", "expected a non-empty mapping channel -> yields")
    out: dict[str, ChannelYields] = {}
    for ch, entry in channels.items():
        key = f"{where}.channels.{ch}"
        if isinstance(entry, dict):
            if "yields" not in entry:
                raise InputError(file, f"{key}.yields", "missing")
            ys = _numbers(file, f"{key}.yields", entry["yields"])
            stat = entry.get("stat")
            st = _numbers(file, f"{key}.stat", stat) if stat is not None else None
        else:
            ys, st = _numbers(file, key, entry), None
        for label, arr in (("yields", ys), ("stat", st or ())):
            bad = invalid_yields(arr)
            if bad:
                msg = f"point '{name}': expected finite values >= 0, got {bad}"
                raise InputError(file, f"{key}.{label}", msg)
        if st is not None and len(st) != len(ys):
            raise InputError(file, f"{key}.stat", f"has {len(st)} entries but yields has {len(ys)}")
        out[str(ch)] = ChannelYields(ys, st)
    return PointYields(name, values, out, _theory(file, f"{where}.theory", raw.get("theory")))


def _theory(file: str, key: str, raw: Any) -> tuple[float, float] | None:
    """``theory: u`` or ``[up, down]``: relative uncertainties, 0 <= up < 1e15 and 0 <= down < 1."""
    if raw is None:
        return None
    pair = _numbers(
        file, key, [raw, raw] if isinstance(raw, int | float) and not isinstance(raw, bool) else raw
    )
    if len(pair) != 2 or not (pair[0] >= 0 and 0 <= pair[1] < 1):
        expected = "a relative uncertainty u or [up, down] with up >= 0 and 0 <= down < 1"
        raise InputError(file, key, f"expected {expected}, got {_short(raw)}")
    return pair[0], pair[1]


def _distinct(file: str, points: list[PointYields]) -> None:
    for attr, what in (("name", "point names"), ("values", "point values")):
        seen: dict[object, int] = {}
        for i, p in enumerate(points):
            k = getattr(p, attr)
            if k in seen:
                raise InputError(
                    file, f"points[{i}]", f"duplicate {what}: {_short(k)} (same as points[{seen[k]}])"
                )
            seen[k] = i


def read_yields_file(path: Path) -> tuple[list[str] | None, list[PointYields]]:
    """Read a yields file; returns (parameter names or None, points)."""
    path = Path(path)
    data = load_yaml_file(path, what="yields file")
    if isinstance(data, dict) and "points" in data:
        raw_points = data["points"]
        if not isinstance(raw_points, list) or not raw_points:
            raise InputError(str(path), "points", "expected a non-empty list of points")
        params = data.get("parameters")
        points = [parse_point(str(path), p, f"points[{i}]") for i, p in enumerate(raw_points)]
    elif isinstance(data, dict) and "channels" in data:
        params, points = data.get("parameters"), [parse_point(str(path), data, "point")]
    else:
        raise InputError(str(path), "points", "expected a mapping with a 'points' list")
    if params is not None and (
        not isinstance(params, list) or not params or not all(isinstance(p, str) for p in params)
    ):
        raise InputError(str(path), "parameters", f"expected a list of names, got {_short(params)}")
    _distinct(str(path), points)
    return params, points


def read_points_file(path: Path) -> Any:
    """The raw point list of a points file (``[{name, values}]`` or ``{"points": [...]}``)."""
    data = load_yaml_file(path, what="points file")
    return data.get("points") if isinstance(data, dict) else data


def write_yields_file(path: Path, points: list[PointYields], parameters: list[str] | None = None) -> None:
    """Write points in the yields-file format (JSON, atomically)."""
    payload: dict[str, Any] = {"points": [p.to_dict() for p in points]}
    if parameters:
        payload = {"parameters": list(parameters), **payload}
    write_json_atomic(path, payload)
