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
