"""The in-memory form of a new signal: per grid point, per channel, the yield per bin."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChannelYields", "PointYields", "invalid_yields", "numbers_in_name"]


_NUMBER = re.compile(r"(?<![A-Za-z])(\d+(?:[.p]\d+)?)")


def numbers_in_name(name: str) -> tuple[float, ...]:
    """The numbers written in a point name, ``p`` read as a decimal point.

    >>> numbers_in_name("ERJR_100p5_20p0")
    (100.5, 20.0)
    """
    return tuple(float(v.replace("p", ".")) for v in _NUMBER.findall(name))


def invalid_yields(values) -> list[float]:
    """The entries of ``values`` that are not finite numbers >= 0 (a yield or its uncertainty)."""
    return [float(v) for v in values if not math.isfinite(v) or v < 0]


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
