"""Exclusion-contour figures: grid points coloured by CLs, observed and expected lines, +-1 and +-2
sigma bands, the sqrt(s) / luminosity / analysis text, plain or mplhep (ATLAS, CMS) style.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot,
so nothing here changes the global backend of a notebook or a batch job. Files are written
atomically (a temporary file beside the target, then renamed).

This module reads no results itself: :mod:`recastfit.contour` passes the grid arrays and the
contour set (so the two never import each other in a cycle); :func:`draw_overlay` reads
contour.json files.

>>> sqrts_lumi_text("13 TeV", "139 fb$^{-1}$")
'\u221as = 13 TeV, 139 fb$^{-1}$'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recastfit.errors import InputError
from recastfit.fileio import load_json_file

__all__ = [
    "COLORS",
    "OVERLAY_COLORS",
    "STYLES",
    "plot_contours",
    "draw_overlay",
    "axis_label",
    "save_figure",
    "sqrts_lumi_text",
    "tick_label_overlaps",
]

COLORS = {
    "observed": "#d40000",  # pure-ish red: tests look for it in the PNG
    "expected": "#0b1f8f",
    "band1": "#ffd700",
    "band2": "#2ca25f",
    "reference": "#000000",
    "failed": "#808080",
}
# one colour per analysis on an overlay (observed solid, expected dashed)
OVERLAY_COLORS = ("#d40000", "#0b1f8f", "#2ca25f", "#ff7f0e", "#6a3d9a", "#17becf", "#8c564b", "#e377c2")
STYLES = ("plain", "atlas", "cms")


def axis_label(label: str | None, name: str, unit: str | None) -> str:
    """``"label [unit]"`` (the parameter name when there is no label).

    >>> axis_label(None, "m1", "GeV"), axis_label("$m_1$", "m1", "")
    ('m1 [GeV]', '$m_1$')
    """
    text = label or name
    return f"{text} [{unit}]" if unit else text


def sqrts_lumi_text(sqrts: str | None, lumi: str | None) -> str:
    """The energy and luminosity line of a figure (empty when neither is given)."""
    parts = [f"\u221as = {sqrts}" if sqrts else "", lumi or ""]
    return ", ".join(p for p in parts if p)


def save_figure(fig: Any, png: str | Path | None = None, pdf: str | Path | None = None) -> list[Path]:
    """Write the figure as PNG and/or PDF (parents created, atomically); return the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    out = []
    for path, fmt, kw in ((png, "png", {"dpi": 150}), (pdf, "pdf", {})):
        if not path:
            continue
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        try:
            fig.savefig(tmp, format=fmt, **kw)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a figure is for sharing
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        out.append(path)
    return out


def _style_context(style: str | None) -> Any:
    """``plain`` (matplotlib defaults), ``atlas`` / ``cms`` (mplhep), or any matplotlib style name."""
    import contextlib

    if not style or style.lower() == "plain":
        return contextlib.nullcontext()
    import matplotlib.style

    if style.lower() in ("atlas", "cms", "lhcb", "alice"):
        try:
            import mplhep
        except ImportError:
            raise ValueError(f"style {style!r} needs mplhep: pip install 'recastfit[style]'") from None

        return matplotlib.style.context(getattr(mplhep.style, style.upper()))
    try:
        return matplotlib.style.context(style)
    except OSError:
        raise ValueError(
            f"style must be one of {', '.join(STYLES)} or a matplotlib style, got {style!r}"
        ) from None


def _figsize(style: str | None) -> tuple[float, float]:
    """mplhep's styles are made for 10-inch figures (large fonts): give them more room."""
    return (9.0, 7.2) if style and style.lower() in ("atlas", "cms", "lhcb", "alice") else (7.0, 5.6)


def _band(ax: Any, cs: Any, lo: str, hi: str, color: str, label: str) -> bool:
    """Fill where one expected variation excludes and the other does not; True when drawn."""
    a, b = cs.fields.get(lo), cs.fields.get(hi)
    if a is None or b is None:
        return False
    from scipy.stats import norm

    zl = float(norm.isf(cs.level))
    with np.errstate(invalid="ignore"):
        band = np.minimum(np.fmax(a.z, b.z) - zl, zl - np.fmin(a.z, b.z))
    if np.nanmax(band, initial=-1.0) <= 0:
        return False
    ax.contourf(a.x, a.y, np.ma.masked_invalid(band), levels=[0.0, np.inf], colors=[color], zorder=1)
    ax.fill_between([], [], color=color, label=label)  # legend entry
    return True


def _lines(ax: Any, segs: Sequence[np.ndarray], label: str, **kw: Any) -> None:
    for i, seg in enumerate(segs):
        seg = np.asarray(seg, dtype=float)
        ax.plot(seg[:, 0], seg[:, 1], label=label if i == 0 else None, **kw)


def tick_label_overlaps(fig: Any, pad: float = 1.0) -> list[tuple[int, str, str, str]]:
    """Pairs of visible tick labels whose rendered boxes overlap (grown by ``pad`` pixels):
    (axes index, ``"x"``/``"y"``, text 1, text 2). Draws the figure first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for k, ax in enumerate(fig.axes):
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = [
                t
                for t in axis.get_ticklabels(minor=False) + axis.get_ticklabels(minor=True)
                if t.get_visible() and t.get_text().strip()
            ]
            boxes = [t.get_window_extent(renderer).padded(pad) for t in labels]
            for i in range(len(labels)):
                for j in range(i + 1, len(labels)):
                    if boxes[i].overlaps(boxes[j]):
                        found.append((k, name, labels[i].get_text(), labels[j].get_text()))
    return found


def _declutter_ticks(fig: Any, ax: Any) -> None:
    """Fewer major ticks on ``ax`` until no tick labels collide (mplhep styles use large fonts)."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        axis.set_minor_formatter(NullFormatter())
    for nbins in (5, 4, 3, 2):
        clashes = {name for k, name, _, _ in tick_label_overlaps(fig) if fig.axes[k] is ax}
        if not clashes:
            return
        for name in clashes:
            axis = ax.xaxis if name == "x" else ax.yaxis
            axis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]))


def _make_headroom(fig: Any, ax: Any, legend: Any, top_data: float, margin: float = 0.03) -> None:
    """Raise the upper y limit so the data (up to ``top_data``) stays below the legend box."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    box = legend.get_window_extent(fig.canvas.get_renderer()).transformed(ax.transAxes.inverted())
    room = 1.0 - box.height - margin  # axes fraction left below the legend
    lo, top = ax.get_ylim()
    if room > 0.3 and top > lo and (top_data - lo) / (top - lo) > room:
        ax.set_ylim(lo, lo + (top_data - lo) / room)


def _legend_title(label: str | None, sqrts: str | None, lumi: str | None, level: float | None) -> str | None:
    lines = [label or "", sqrts_lumi_text(sqrts, lumi)]
    if level is not None:
        lines.append(f"All limits at {100 * (1 - level):g}% CL")
    text = "\n".join(t for t in lines if t)
    return text or None


def plot_contours(
    arrays: Mapping[str, np.ndarray],
    contour_set: Any,
    *,
    png: str | Path | None = None,
    pdf: str | Path | None = None,
    reference_lines: Sequence[np.ndarray] | None = None,
    reference_label: str = "published",
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    color_by: str = "cls",
    style: str | None = None,
    show_band2: bool = True,
    sqrts: str | None = None,
    lumi: str | None = None,
    label: str | None = None,
) -> Any:
    """Draw the grid (coloured by observed CLs or significance), the observed line, the expected
    line with its +-1 sigma band (and +-2 sigma with ``show_band2``), failed points as grey
    crosses, an optional reference contour and the ``label`` / sqrt(s) / luminosity text.

    ``arrays`` as :func:`recastfit.contour.results_arrays` returns them (``values``, ``obs``,
    ``failed``); ``contour_set`` a :class:`recastfit.contour.ContourSet`. Returns the
    :class:`matplotlib.figure.Figure`; writes ``png``/``pdf`` when given.
    """
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure
    from scipy.stats import norm

    if not isinstance(arrays, Mapping) or "failed" not in arrays:
        raise TypeError(
            "plot_contours takes the arrays of recastfit.contour.results_arrays; "
            "for a results.json (path or dict) use recastfit.contour.figure_from_results"
        )
    failed = np.asarray(arrays["failed"], dtype=bool)
    ok = ~failed
    pts = np.asarray(arrays["values"], dtype=float)
    obs = np.asarray(arrays["obs"], dtype=float)
    cs = contour_set
    params, units = list(cs.parameters) + ["x", "y"], list(cs.units or []) + ["", ""]
    labels = list(cs.labels or []) + params[len(cs.labels or []) :]
    with _style_context(style):
        fig = Figure(figsize=_figsize(style))
        ax = fig.add_subplot()
        if show_band2:
            _band(
                ax,
                cs,
                "expected_minus2sigma",
                "expected_plus2sigma",
                COLORS["band2"],
                r"Expected $\pm 2\sigma$",
            )
        _band(
            ax, cs, "expected_minus1sigma", "expected_plus1sigma", COLORS["band1"], r"Expected $\pm 1\sigma$"
        )
        if color_by == "significance":
            vals = np.clip(norm.isf(np.clip(obs[ok], 0.0, 1.0)), -5.0, 5.0)
            norm_, clabel = Normalize(-3, 5), "Z (observed)"
        elif color_by == "cls":
            vals = np.clip(obs[ok], 1e-4, 1.0)
            norm_, clabel = LogNorm(1e-4, 1.0), r"CL$_s$ (observed)"
        else:
            raise ValueError(f"color_by must be 'cls' or 'significance', got {color_by!r}")
        sc = ax.scatter(
            pts[ok, 0], pts[ok, 1], c=vals, norm=norm_, cmap="viridis", s=22, zorder=3, edgecolors="none"
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
        exp_kw = {"color": COLORS["expected"], "linestyle": "--", "linewidth": 2.0, "zorder": 5}
        _lines(ax, cs.lines.get("expected", []), "Expected", **exp_kw)
        obs_kw = {"color": COLORS["observed"], "linestyle": "-", "linewidth": 2.5, "zorder": 6}
        _lines(ax, cs.lines.get("observed", []), "Observed", **obs_kw)
        if reference_lines is not None:
            ref_kw = {"color": COLORS["reference"], "linestyle": "-.", "linewidth": 1.5, "zorder": 6}
            _lines(ax, reference_lines, reference_label, **ref_kw)
        if cs.mirror:
            lo = max(np.nanmin(pts[:, 0]), np.nanmin(pts[:, 1]))
            hi = min(np.nanmax(pts[:, 0]), np.nanmax(pts[:, 1]))
            if hi > lo:
                ax.plot([lo, hi], [lo, hi], color="#aaaaaa", linestyle=":", linewidth=1.0, zorder=2)
        for setlim, col in ((ax.set_xlim, pts[:, 0]), (ax.set_ylim, pts[:, 1])):
            lo, hi = float(np.nanmin(col)), float(np.nanmax(col))
            pad = 0.04 * (hi - lo or 1.0)
            setlim(lo - pad, hi + pad)
        top_data = float(np.nanmax(pts[:, 1])) + 0.04 * float(np.ptp(pts[:, 1]) or 1.0)
        ax.set_xlabel(xlabel or axis_label(labels[0], params[0], units[0]))
        ax.set_ylabel(ylabel or axis_label(labels[1], params[1], units[1]))
        text = title if title is not None else cs.analysis
        if text:
            ax.set_title(text, fontsize=12)
        legend = ax.legend(
            loc="upper left",
            fontsize=9,
            title=_legend_title(label, sqrts, lumi, cs.level),
            title_fontsize=9,
            alignment="left",
            frameon=False,
            ncols=2,
        )
        fig.tight_layout()
        _make_headroom(fig, ax, legend, top_data)
        _declutter_ticks(fig, ax)
    save_figure(fig, png, pdf)
    return fig


def _read_contour_json(path: Path) -> dict[str, Any]:
    d = load_json_file(path, what="contour file")
    if not isinstance(d, dict) or not isinstance(d.get("lines"), dict):
        raise InputError(str(path), "lines", "expected a contour.json (an object with 'lines')")
    lines = {}
    for kind, segs in d["lines"].items():
        try:
            lines[kind] = [np.asarray(s, dtype=float).reshape(-1, 2) for s in segs]
        except (TypeError, ValueError):
            raise InputError(
                str(path), f"lines.{kind}", "expected a list of [[x, y], ...] polylines"
            ) from None
    return {**d, "lines": lines}


def draw_overlay(
    contour_jsons: Sequence[str | Path],
    labels: Sequence[str] | None,
    out_png: str | Path,
    options: Any = None,
    *,
    pdf: str | Path | None = None,
) -> Any:
    """Several analyses on one figure: each one's observed (solid) and expected (dashed) lines.

    ``labels``: legend text per file (default: each file's ``analysis``). ``options``: a
    :class:`recastfit.contour.ContourOptions` (title, style, sqrt(s), luminosity, label); ``pdf``:
    also write a PDF. The axes must agree (same parameters): an
    :class:`InputError` names the first file that differs.
    """
    from matplotlib.figure import Figure

    paths = [Path(p) for p in contour_jsons]
    if not paths:
        raise ValueError("draw_overlay needs at least one contour.json")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} contour files")
    docs = [_read_contour_json(p) for p in paths]
    params = list(docs[0].get("parameters") or ["x", "y"])
    for p, d in zip(paths[1:], docs[1:], strict=True):
        if list(d.get("parameters") or ["x", "y"]) != params:
            raise InputError(
                str(p), "parameters", f"expected the same grid parameters as {paths[0]}: {params}"
            )
    units = list(docs[0].get("units") or []) + ["", ""]
    axlabels = list(docs[0].get("labels") or []) + params[len(docs[0].get("labels") or []) :]
    get = (
        (lambda k, default=None: getattr(options, k, default))
        if options is not None
        else (lambda k, d=None: d)
    )
    with _style_context(get("style")):
        fig = Figure(figsize=_figsize(get("style")))
        ax = fig.add_subplot()
        allpts = []
        for i, d in enumerate(docs):
            color = OVERLAY_COLORS[i % len(OVERLAY_COLORS)]
            name = labels[i] if labels is not None else str(d.get("analysis") or paths[i].parent.name)
            _lines(ax, d["lines"].get("observed", []), f"{name} (observed)", color=color, linewidth=2.2)
            _lines(
                ax,
                d["lines"].get("expected", []),
                f"{name} (expected)",
                color=color,
                linestyle="--",
                linewidth=1.6,
            )
            allpts += [s for k in ("observed", "expected") for s in d["lines"].get(k, [])]
        if allpts:
            pts = np.vstack(allpts)
            for setlim, col in ((ax.set_xlim, pts[:, 0]), (ax.set_ylim, pts[:, 1])):
                lo, hi = float(col.min()), float(col.max())
                pad = 0.05 * (hi - lo or 1.0)
                setlim(lo - pad, hi + pad)
        ax.set_xlabel(axis_label(axlabels[0], params[0], units[0]))
        ax.set_ylabel(axis_label(axlabels[1], params[1], units[1]))
        if get("title"):
            ax.set_title(get("title"), fontsize=12)
        level = docs[0].get("level", 0.05)
        legend = ax.legend(
            loc="upper left",
            fontsize=9,
            title=_legend_title(get("label"), get("sqrts"), get("lumi"), float(level)),
            title_fontsize=9,
            alignment="left",
            frameon=False,
        )
        fig.tight_layout()
        if allpts:
            _make_headroom(fig, ax, legend, float(pts[:, 1].max()))
        _declutter_ticks(fig, ax)
    save_figure(fig, out_png, pdf)
    return fig
