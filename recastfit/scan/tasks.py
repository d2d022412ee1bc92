"""Yields rows -> hypothesis-test tasks: one :class:`~recastfit.results.PatchTask` per row and analysis.

Each analysis maps table columns to (channel, bin) of its background workspace; a row's
yields in those columns become the signal sample of that row's patch (built by
:func:`recastfit.patches.build_patch`, so scans and grids make identical patches). A row whose
name or yields are unusable is not fitted: its entry is the reason, which the scan records as a
``failed`` row instead of stopping the whole scan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recastfit.errors import ConfigError
from recastfit.names import name_problem
from recastfit.patches import SignalOptions, build_patch
from recastfit.results import PatchTask
from recastfit.signals.model import ChannelYields, PointYields

__all__ = ["YieldAnalysis", "row_problem", "signal_size", "tasks_from_rows"]


@dataclass(frozen=True)
class YieldAnalysis:
    """One analysis of a yields scan: its background workspace, column -> (channel, bin), signal options."""

    name: str
    bkg_spec: dict
    columns: Mapping[str, tuple[str, int]]
    options: SignalOptions = field(default_factory=SignalOptions)

    def check(self, file: str = "scan config") -> None:
        """Every column names an existing (channel, bin) of the workspace, else :class:`ConfigError`."""
        nbins = channel_bins(self.bkg_spec)
        if not self.columns:
            raise ConfigError(file, f"scan.analyses.{self.name}.columns", "at least one column")
        for col, (ch, b) in self.columns.items():
            if ch not in nbins or not 0 <= int(b) < nbins[ch]:
                raise ConfigError(
                    file,
                    f"scan.analyses.{self.name}.columns.{col}",
                    f"a [channel, bin] of the workspace (channels and bins: {nbins})",
                    [ch, b],
                )


def channel_bins(bkg_spec: dict) -> dict[str, int]:
    """Bins per channel of a workspace."""
    return {c["name"]: len(c["samples"][0]["data"]) for c in bkg_spec["channels"]}


def _number_problem(label: str, value: Any) -> str | None:
    if value is None:
        return f"{label} is empty"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{label} is not a number ({value!r})"
    if not math.isfinite(value):
        return f"{label} is not finite ({value!r})"
    return None


def row_problem(
    name: Any, values: Sequence[tuple[str, Any]], yields: Sequence[tuple[str, Any]]
) -> str | None:
    """Why a row cannot be fitted (bad name, missing or non-finite value, negative yield), or None.

    >>> row_problem("pt1", [("m1", 100.0)], [("y1", 2.5)]) is None
    True
    >>> row_problem("../x", [], [])
    "bad point name '../x': expected letters, digits and '_.+-' only, starting with a letter or digit"
    >>> row_problem("pt2", [], [("y1", float("nan"))])
    'yield y1 is not finite (nan)'
    """
    problem = name_problem(name)
    if problem is not None:
        shown = name if isinstance(name, str) and len(name) <= 80 else repr(name)[:80]
        return f"bad point name {shown!r}: expected {problem}"
    for col, v in values:
        bad = _number_problem(f"parameter {col}", v)
        if bad:
            return bad
    for col, v in yields:
        bad = _number_problem(f"yield {col}", v)
        if bad:
            return bad
        if v < 0:
            return f"yield {col} is negative ({v!r})"
    return None


def tasks_from_rows(
    rows: Mapping[str, Sequence[Any]],
    analysis: YieldAnalysis,
    *,
    id_column: str,
    parameters: Sequence[str] = (),
    source: str = "scan table",
) -> list[PatchTask | str]:
    """Per row: its :class:`PatchTask` for ``analysis`` (bins with no column get 0), or why it has none."""
    nbins = channel_bins(analysis.bkg_spec)
    n = len(rows[id_column])
    out: list[PatchTask | str] = []
    for i in range(n):
        name = rows[id_column][i]
        values = [(p, rows[p][i]) for p in parameters]
        yields = [(col, rows[col][i]) for col in analysis.columns]
        problem = row_problem(name, values, yields)
        if problem:
            out.append(problem)
            continue
        chans: dict[str, list[float]] = {}
        for col, (ch, b) in analysis.columns.items():
            chans.setdefault(ch, [0.0] * nbins[ch])[int(b)] = float(rows[col][i])
        point = PointYields(
            str(name),
            tuple(float(v) for _, v in values),
            {ch: ChannelYields(tuple(v)) for ch, v in chans.items()},
        )
        patch = build_patch(analysis.bkg_spec, point, analysis.options, source=source)
        out.append(PatchTask(point.name, point.values, patch))
    return out


def signal_size(task: PatchTask) -> float:
    """Total signal yield a task adds (the scan orders each chunk by it, so that large signals, the
    slow points of a batched engine, share batches instead of holding back a batch each).

    >>> signal_size(PatchTask("p", (), [{"op": "add", "path": "/x", "value": {"data": [1.5, 2.0]}}]))
    3.5
    """
    total = 0.0
    for op in task.patch:
        if op.get("op") == "add" and isinstance(op.get("value"), dict):
            total += sum(float(v) for v in op["value"].get("data") or ())
    return total
