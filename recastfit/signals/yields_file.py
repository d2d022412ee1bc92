"""Yields files (JSON or YAML): ``{"parameters": [...], "points": [{name, values, channels}]}``.

Each channel entry is ``{"yields": [per bin], "stat": [per bin, optional]}`` or just the list of
yields. A single-point file (``{name, values, channels}``, as written per point by the
``recast`` rule) is accepted too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from recastfit.errors import InputError
from recastfit.signals.model import ChannelYields, PointYields, invalid_yields

__all__ = ["read_yields_file", "write_yields_file", "parse_point", "load_structured"]


def load_structured(path: Path) -> Any:
    """Parse a JSON or YAML file, with an error naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, "file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(str(path), None, f"not valid {path.suffix[1:].upper()}: {exc}") from None


def _numbers(file: str, key: str, raw: Any) -> tuple[float, ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise InputError(file, key, f"expected a non-empty list of numbers, got {raw!r}")
    try:
        values = tuple(float(v) for v in raw)
    except (TypeError, ValueError):
        raise InputError(file, key, f"expected numbers, got {raw!r}") from None
    return values


def parse_point(file: str, raw: Any, where: str) -> PointYields:
    """One point record -> :class:`PointYields`; ``where`` locates it in error messages."""
    if not isinstance(raw, dict):
        raise InputError(file, where, f"expected a mapping with name/values/channels, got {raw!r}")
    for key in ("name", "channels"):
        if key not in raw:
            raise InputError(file, f"{where}.{key}", "missing")
    name = str(raw["name"])
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
    """``theory: u`` or ``[up, down]``: relative uncertainties, up >= 0 and 0 <= down < 1."""
    if raw is None:
        return None
    pair = (float(raw), float(raw)) if isinstance(raw, int | float) else _numbers(file, key, raw)
    if len(pair) != 2 or not (pair[0] >= 0 and 0 <= pair[1] < 1):
        expected = "a relative uncertainty u or [up, down] with up >= 0 and 0 <= down < 1"
        raise InputError(file, key, f"expected {expected}, got {raw!r}")
    return pair[0], pair[1]


def read_yields_file(path: Path) -> tuple[list[str] | None, list[PointYields]]:
    """Read a yields file; returns (parameter names or None, points)."""
    path = Path(path)
    data = load_structured(path)
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
    names = [p.name for p in points]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(str(path), "points", f"duplicate point names {dupes}")
    return params, points


def write_yields_file(path: Path, points: list[PointYields], parameters: list[str] | None = None) -> None:
    """Write points in the yields-file format (JSON)."""
    payload: dict[str, Any] = {"points": [p.to_dict() for p in points]}
    if parameters:
        payload = {"parameters": list(parameters), **payload}
    Path(path).write_text(json.dumps(payload, indent=1))
