"""The demo signal model: a grid on (m_parent, m_LSP) whose cross section falls with mass.

Two grids: ``full`` (54 points, the default demo) and ``small`` (6 points, for cheap end-to-end
runs). The exclusion contour crosses both: light parents are excluded, 1 TeV ones are not.

>>> len(demo_grid()), demo_grid("small")[:2]
(54, [(400.0, 0.0), (400.0, 300.0)])
>>> point_name(500.0, 100.0)
'demo_500_100'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from recastfit.demo.workspace import LUMI_FB
from recastfit.signals.model import ChannelYields, PointYields

__all__ = [
    "PARAMETERS",
    "UNITS",
    "LABELS",
    "GRIDS",
    "cross_section_fb",
    "signal_yields",
    "demo_grid",
    "point_name",
    "demo_points",
]

PARAMETERS = ["m_parent", "m_LSP"]
UNITS = ["GeV", "GeV"]
LABELS = [r"$m(\tilde{\chi}^{\pm}_{1})$", r"$m(\tilde{\chi}^{0}_{1})$"]

#: the named demo grids (``recastfit demo --grid NAME``)
GRIDS = ("full", "small")


def cross_section_fb(m_parent: float) -> float:
    """A falling production cross section (fb), electroweakino-like in shape."""
    return 2000.0 * math.exp(-m_parent / 90.0) + 6.0 * math.exp(-m_parent / 200.0)


def signal_yields(m_parent: float, m_lsp: float) -> dict[str, ChannelYields]:
    """Signal yields per channel and bin at one mass point (what the preserved analysis gives).

    Large mass splittings populate the high bins of ``SRA``; compressed spectra land in
    ``SRB``; a little signal leaks into the control region.
    """
    if m_lsp >= m_parent:
        raise ValueError(f"m_LSP={m_lsp} must be below m_parent={m_parent}")
    n = cross_section_fb(m_parent) * LUMI_FB
    dm = m_parent - m_lsp
    eff_a = 0.06 * (1.0 - math.exp(-dm / 250.0))
    centre = min(3.0, dm / 220.0)
    shape = [math.exp(-0.5 * ((i - centre) / 0.9) ** 2) for i in range(4)]
    total = sum(shape)
    sra = [n * eff_a * s / total for s in shape]
    eff_b = 0.02 * math.exp(-dm / 150.0) + 0.002
    srb = [n * eff_b]
    cr = [n * 0.001]
    stat = 0.05

    def cy(values: list[float]) -> ChannelYields:
        ys = tuple(round(v, 6) for v in values)
        return ChannelYields(ys, tuple(round(stat * v, 6) for v in ys))

    return {"CR": cy(cr), "SRA": cy(sra), "SRB": cy(srb)}


def demo_grid(size: str = "full") -> list[tuple[float, float]]:
    """The demo grid ``size`` (one of :data:`GRIDS`).

    ``full``: m_parent 200..1000 GeV in 100 GeV steps, m_LSP from 0 to m_parent - 100 (54 points).
    ``small``: m_parent in {400, 700, 1000} x m_LSP in {0, 300} (6 points; CLs runs from ~0 to ~0.8,
    so the 95 % CL contour crosses both rows).
    """
    if size == "full":
        return [(float(m1), float(m2)) for m1 in range(200, 1001, 100) for m2 in range(0, m1, 100)]
    if size == "small":
        return [(float(m1), float(m2)) for m1 in (400, 700, 1000) for m2 in (0, 300)]
    raise ValueError(f"unknown demo grid {size!r}; expected one of {', '.join(GRIDS)}")


def point_name(m_parent: float, m_lsp: float) -> str:
    """The demo's point name, ``demo_<m_parent>_<m_LSP>``."""
    return f"demo_{m_parent:g}_{m_lsp:g}"


def demo_points(grid: Sequence[tuple[float, float]] | None = None) -> list[PointYields]:
    """The signal yields of every point of ``grid`` (default: the full demo grid)."""
    return [
        PointYields(point_name(m1, m2), (m1, m2), signal_yields(m1, m2)) for m1, m2 in grid or demo_grid()
    ]
