"""Figures of a scan summary: excluded fraction in 1D and 2D projections of chosen parameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recastfit.plot import save_figure
from recastfit.scan.summary import ScanSummary

__all__ = ["plot_scan_summary"]


def _name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def plot_scan_summary(
    summary: ScanSummary | dict[str, Any],
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("png", "pdf"),
    labels: dict[str, str] | None = None,
) -> list[Path]:
    """``scan_1d.<fmt>`` (excluded fraction and point counts per parameter) and
    ``scan_2d_<x>_<y>.<fmt>`` (excluded fraction map) under ``out_dir``; returns the paths."""
    from matplotlib.figure import Figure

    d = summary.to_dict() if isinstance(summary, ScanSummary) else summary
    labels = labels or {}
    out_dir = Path(out_dir)
    written: list[Path] = []

    def save(fig: Any, stem: str) -> None:
        kw = {fmt: out_dir / f"{stem}.{fmt}" for fmt in formats if fmt in ("png", "pdf")}
        written.extend(save_figure(fig, kw.get("png"), kw.get("pdf")))

    p1 = d.get("projections_1d") or {}
    if p1:
        fig = Figure(figsize=(4.6 * len(p1), 3.8))
        for i, (p, h) in enumerate(p1.items()):
            ax = fig.add_subplot(1, len(p1), i + 1)
            edges = np.asarray(h["edges"])
            frac = np.array([np.nan if f is None else f for f in h["fraction"]])
            ax.stairs(np.nan_to_num(frac), edges, color="#d40000", linewidth=2, label="excluded fraction")
            ax.set_ylim(0, 1.05)
            ax.set_xlabel(labels.get(p, p))
            ax.set_ylabel("fraction excluded")
            tw = ax.twinx()
            tw.stairs(h["total"], edges, color="#555555", linestyle=":", label="points")
            tw.set_ylabel("points per bin")
            ax.set_title(f"{d['n_excluded']} / {d['n_points']} excluded", fontsize=9)
        fig.tight_layout()
        save(fig, "scan_1d")
    for h in (d.get("projections_2d") or {}).values():
        fig = Figure(figsize=(6.0, 4.8))
        ax = fig.add_subplot()
        frac = np.array([[np.nan if v is None else v for v in row] for row in h["fraction"]], float)
        mesh = ax.pcolormesh(
            h["xedges"], h["yedges"], np.ma.masked_invalid(frac).T, vmin=0, vmax=1, cmap="magma_r"
        )
        fig.colorbar(mesh, ax=ax, label="fraction excluded")
        ax.set_xlabel(labels.get(h["x"], h["x"]))
        ax.set_ylabel(labels.get(h["y"], h["y"]))
        ax.set_title(f"excluded fraction (CLs < {d['level']:g}, best expected analysis)", fontsize=9)
        fig.tight_layout()
        save(fig, f"scan_2d_{_name(h['x'])}_{_name(h['y'])}")
    return written
