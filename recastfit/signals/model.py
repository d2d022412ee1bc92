"""The in-memory form of a new signal: per grid point, per channel, the yield per bin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChannelYields", "PointYields"]


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
    """One theory point: its name, grid coordinates and the yields per workspace channel."""

    name: str
    values: tuple[float, ...]
    channels: dict[str, ChannelYields] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "values": list(self.values),
            "channels": {ch: cy.to_dict() for ch, cy in self.channels.items()},
        }
