"""The per-point result record shared by every engine, back end, store and plot."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FitSettings", "HypotestResult", "PatchTask", "digest"]

EXPECTED_SIGMAS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # order of ``cls_exp`` (pyhf's order)


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON form of ``obj`` (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class FitSettings:
    """Everything that changes a hypothesis-test result (part of the store key)."""

    mu_test: float = 1.0
    test_stat: str = "qtilde"
    calctype: str = "asymptotics"
    engine: str = "pyhf"  # "pyhf" (reference) or "fast" (batched JAX)

    def key(self) -> str:
        return digest(asdict(self))


@dataclass(frozen=True)
class PatchTask:
    """One signal hypothesis: a pyhf PatchSet entry (name, grid values, RFC 6902 ops)."""

    name: str
    values: tuple[float, ...]
    patch: list[dict]

    def key(self) -> str:
        return digest(self.patch)


@dataclass
class HypotestResult:
    """CLs at ``mu_test`` for one point; ``status == 'failed'`` never carries CLs."""

    name: str
    values: list[float]
    status: str  # "ok" | "failed"
    cls_obs: float | None = None
    cls_exp: list[float] | None = None  # at -2, -1, 0, +1, +2 sigma
    mu_hat: float | None = None
    reason: str | None = None
    wall_time: float = 0.0
    engine: str = "pyhf"
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {self.status!r}")
        if self.status == "failed":
            self.cls_obs, self.cls_exp = None, None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HypotestResult:
        return cls(**d)
