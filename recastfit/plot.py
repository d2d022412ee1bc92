"""Exclusion-contour figures: grid points coloured by CLs, observed and expected lines, +-1 sigma band.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot,
so nothing here changes the global backend of a notebook or a batch job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recastfit.contour import (
    ContourSet,
    load_results,
    read_contour_lines,
    results_arrays,
    significance,
)

__all__ = ["COLORS", "plot_contours", "axis_label", "save_figure"]

COLORS = {
    "observed": "#d40000",  # pure-ish red: tests look for it in the PNG
    "expected": "#0b1f8f",
    "band1": "#ffd700",
    "band2": "#2ca25f",
    "reference": "#000000",
    "failed": "#808080",
}


def axis_label(label: str | None, name: str, unit: str | None) -> str:
    """``"label [unit]"`` (the parameter name when there is no label)."""
    text = label or name
    return f"{text} [{unit}]" if unit else text


def save_figure(fig: Any, png: str | Path | None = None, pdf: str | Path | None = None) -> list[Path]:
    """Write the figure as PNG and/or PDF (parents created); return the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    out = []
    for path, kw in ((png, {"dpi": 150}), (pdf, {})):
        if path:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, **kw)
            out.append(path)
    return out


def _band(ax: Any, cs: ContourSet, lo: str, hi: str, color: str, label: str) -> None:
    """Fill where one expected variation excludes and the other does not."""
    a, b = cs.fields.get(lo), cs.fields.get(hi)
    if a is None or b is None:
        return
    from scipy.stats import norm

    zl = float(norm.isf(cs.level))
    band = np.minimum(np.fmax(a.z, b.z) - zl, zl - np.fmin(a.z, b.z))
    if np.nanmax(band, initial=-1.0) <= 0:
        return
    ax.contourf(a.x, a.y, np.ma.masked_invalid(band), levels=[0.0, np.inf], colors=[color], zorder=1)
    ax.fill_between([], [], color=color, label=label)  # legend entry


def _lines(ax: Any, segs: Sequence[np.ndarray], label: str, **kw: Any) -> None:
    for i, seg in enumerate(segs):
        ax.plot(seg[:, 0], seg[:, 1], label=label if i == 0 else None, **kw)


def _style_context(style: str | None) -> Any:
    import contextlib

    if not style:
        return contextlib.nullcontext()
    import matplotlib.style

    if style.lower() in ("atlas", "cms", "lhcb", "alice"):
        import mplhep

        return matplotlib.style.context(getattr(mplhep.style, style.upper()))
    return matplotlib.style.context(style)


def plot_contours(
    results: Mapping[str, Any] | str | Path,
    contour_set: ContourSet,
    *,
    png: str | Path | None = None,
    pdf: str | Path | None = None,
    reference: str | Path | Sequence[np.ndarray] | None = None,
    reference_label: str = "published",
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    color_by: str = "cls",
    style: str | None = None,
    show_band2: bool = False,
) -> Any:
    """Draw the grid (coloured by observed CLs or significance), the observed line, the expected
    line with its +-1 sigma band (and +-2 sigma with ``show_band2``), failed points as grey
    crosses and an optional reference contour (file or list of (n, 2) arrays).

    Returns the :class:`matplotlib.figure.Figure`; writes ``png``/``pdf`` when given.
    """
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    data, source = load_results(results)
    arr = results_arrays(data, source)
    ok, failed = ~arr["failed"], arr["failed"]
    pts = arr["values"]
    params, units = contour_set.parameters, contour_set.units
    labels = contour_set.labels or params
    with _style_context(style):
        fig = Figure(figsize=(7.0, 5.6))
        ax = fig.add_subplot()
        if show_band2:
            _band(
                ax,
                contour_set,
                "expected_minus2sigma",
                "expected_plus2sigma",
                COLORS["band2"],
                r"Expected $\pm 2\sigma$",
            )
        _band(
            ax,
            contour_set,
            "expected_minus1sigma",
            "expected_plus1sigma",
            COLORS["band1"],
            r"Expected $\pm 1\sigma$",
        )
        if color_by == "significance":
            vals, norm_, cmap, clabel = (
                significance(arr["obs"][ok]),
                Normalize(-3, 5),
                "viridis",
                "Z (observed)",
            )
        else:
            vals = np.clip(arr["obs"][ok], 1e-4, 1.0)
            norm_, cmap, clabel = LogNorm(1e-4, 1.0), "viridis", r"CL$_s$ (observed)"
        sc = ax.scatter(
            pts[ok, 0], pts[ok, 1], c=vals, norm=norm_, cmap=cmap, s=22, zorder=3, edgecolors="none"
        )
        fig.colorbar(sc, ax=ax, label=clabel)
        if failed.any():
            ax.scatter(
                pts[failed, 0],
                pts[failed, 1],
                marker="x",
                color=COLORS["failed"],
                s=30,
                zorder=4,
                label=f"failed fits ({int(failed.sum())})",
            )
        _lines(
            ax,
            contour_set.lines.get("expected", []),
            "Expected",
            color=COLORS["expected"],
            linestyle="--",
            linewidth=2.0,
            zorder=5,
        )
        _lines(
            ax,
            contour_set.lines.get("observed", []),
            "Observed",
            color=COLORS["observed"],
            linestyle="-",
            linewidth=2.5,
            zorder=6,
        )
        if reference is not None:
            ref = read_contour_lines(reference) if isinstance(reference, str | Path) else reference
            _lines(
                ax, ref, reference_label, color=COLORS["reference"], linestyle="-.", linewidth=1.5, zorder=6
            )
        if contour_set.mirror:
            lo = max(np.nanmin(pts[:, 0]), np.nanmin(pts[:, 1]))
            hi = min(np.nanmax(pts[:, 0]), np.nanmax(pts[:, 1]))
            if hi > lo:
                ax.plot([lo, hi], [lo, hi], color="#aaaaaa", linestyle=":", linewidth=1.0, zorder=2)
        for setlim, col in ((ax.set_xlim, pts[:, 0]), (ax.set_ylim, pts[:, 1])):
            lo, hi = float(np.nanmin(col)), float(np.nanmax(col))
            pad = 0.04 * (hi - lo or 1.0)
            setlim(lo - pad, hi + pad)
        ax.set_xlabel(xlabel or axis_label(labels[0], params[0], units[0] if units else None))
        ax.set_ylabel(ylabel or axis_label(labels[1], params[1], units[1] if len(units) > 1 else None))
        text = title or contour_set.analysis
        if text:
            ax.set_title(f"{text}   (CL$_s$ = {contour_set.level:g})", fontsize=11)
        ax.legend(loc="upper left", fontsize=9, frameon=False)
        fig.tight_layout()
    save_figure(fig, png, pdf)
    return fig
