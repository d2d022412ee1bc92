"""The in-memory form of a new signal: per grid point, per channel, the yield per bin."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from recastfit.errors import InputError

__all__ = [
    "ChannelYields",
    "PointYields",
    "format_value",
    "invalid_yields",
    "numbers_in_name",
    "values_from_name",
]


MAX_ABS = 1e15  # the largest |number| accepted in a signal (grid values, yields, uncertainties)
_NUMBER = re.compile(r"(?<![A-Za-z])(\d+(?:[.p]\d+)?)")


def numbers_in_name(name: str) -> tuple[float, ...]:
    """The numbers written in a point name, ``p`` read as a decimal point.

    >>> numbers_in_name("ERJR_100p5_20p0")
    (100.5, 20.0)
    """
    return tuple(float(v.replace("p", ".")) for v in _NUMBER.findall(name))


def values_from_name(
    name: str, n: int, *, pattern: str | None = None, source: str = "points"
) -> tuple[float, ...]:
    r"""Grid values read from a point name: its numbers in order (``100p5`` reads as 100.5), or
    the groups of the regex ``pattern`` (one per parameter); InputError naming ``source`` else.

    >>> values_from_name("stau_280_120", 2), values_from_name("x12.5-y3", 2, pattern=r"x([\d.]+)-y([\d.]+)")
    ((280.0, 120.0), (12.5, 3.0))
    """
    if pattern:
        match = re.search(pattern, name)
        found = tuple(float(g.replace("p", ".")) for g in match.groups()) if match else ()
    else:
        found = numbers_in_name(name)
    if len(found) != n:
        msg = f"expected {n} numbers in the name for the grid values, found {list(found)}"
        raise InputError(source, f"point '{name}'", msg)
    return found


def format_value(v: float) -> str:
    """A grid value as written in point names (``p`` for the decimal point).

    >>> format_value(100.0), format_value(12.5), format_value(-3)
    ('100', '12p5', '-3')
    """
    return f"{v:g}".replace(".", "p")


def invalid_yields(values) -> list[float]:
    """The entries of ``values`` that are not finite numbers in [0, 1e15] (a yield or its uncertainty).

    >>> invalid_yields([1.0, -2.0, float("nan"), 1e308])
    [-2.0, nan, 1e+308]
    """
    return [float(v) for v in values if not math.isfinite(v) or v < 0 or v > MAX_ABS]


@dataclass(frozen=True)
class ChannelYields:
    """Signal yield per bin of one channel, with optional absolute MC-stat uncertainty."""

    yields: tuple[float, ...]
    stat: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"yields": list(self.yields)}
        if self.stat is not None:
            out["stat"] = list(self.stat)
        return out


@dataclass(frozen=True)
class PointYields:
    """One theory point: its name, grid coordinates and the yields per workspace channel.

    ``theory``: the point's own relative signal-normalisation uncertainty (up, down), e.g. from
    the cross-section table; used when ``signal.options.theory_uncertainty`` is ``per_point``.
    """

    name: str
    values: tuple[float, ...]
    channels: dict[str, ChannelYields] = field(default_factory=dict)
    theory: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "values": list(self.values),
            "channels": {ch: cy.to_dict() for ch, cy in self.channels.items()},
        }
        if self.theory is not None:
            out["theory"] = list(self.theory)
        return out
