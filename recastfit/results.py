"""The per-point result record shared by every engine, back end, store and plot."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FitSettings", "HypotestResult", "PatchTask", "digest", "ENGINES", "TEST_STATS", "CALCTYPES"]

ENGINES = ("pyhf", "fast")
TEST_STATS = ("qtilde", "q", "q0")
CALCTYPES = ("asymptotics", "toybased")


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON form of ``obj`` (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class FitSettings:
    """How hypothesis tests are run; all fields but ``timeout`` change a result (the store key).

    ``timeout`` is the budget in seconds per point: engines stop at a deadline derived from it
    and mark what is left ``failed``; back ends enforce it from outside the fitting process.

    >>> FitSettings().key() == FitSettings(timeout=5.0).key()
    True
    >>> FitSettings(engine="minuit")
    Traceback (most recent call last):
    ...
    ValueError: FitSettings.engine must be one of ('pyhf', 'fast'), got 'minuit'
    """

    mu_test: float = 1.0
    test_stat: str = "qtilde"
    calctype: str = "asymptotics"
    engine: str = "pyhf"  # "pyhf" (reference) or "fast" (batched JAX)
    timeout: float = 300.0

    def __post_init__(self) -> None:
        for name, allowed in (("engine", ENGINES), ("test_stat", TEST_STATS), ("calctype", CALCTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"FitSettings.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.timeout > 0:
            raise ValueError(
                f"FitSettings.timeout must be a positive number of seconds, got {self.timeout!r}"
            )

    def key(self) -> str:
        d = asdict(self)
        del d["timeout"]  # a budget, not a result: changing it keeps stored results valid
        return digest(d)


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
