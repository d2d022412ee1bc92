"""Contour figures for the stau grid (shared pyhf reference CLs) and the demo analysis."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from recastfit.cli import main
from recastfit.contour import contours_from_results
from recastfit.plot import COLORS, plot_contours


def colour_pixels(img: np.ndarray, hexcolour: str, tol: float = 0.08) -> int:
    rgb = np.array([int(hexcolour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img[..., :3] - rgb).max(axis=-1) < tol).sum())


def check_png(path, min_ink=0.08):
    img = mpimg.imread(path)
    assert img.shape[0] >= 600 and img.shape[1] >= 800, img.shape
    ink = float((img[..., :3].min(axis=-1) < 0.95).mean())
    assert min_ink < ink < 0.9, f"non-white fraction {ink:.3f}"
    for key, n in (("observed", 300), ("expected", 150), ("band1", 2000)):
        assert colour_pixels(img, COLORS[key]) > n, f"{key} colour {COLORS[key]} missing from {path}"
    return img


@pytest.fixture
def stau_results(stau_dir):
    ref = json.loads((stau_dir / "reference_pyhf.json").read_text())["points"]
    points = [
        {
            "name": f"stau_{p['m'][0]:g}_{p['m'][1]:g}",
            "values": p["m"],
            "status": "ok",
            "cls_obs": p["obs"],
            "cls_exp": p["exp"],
        }
        for p in ref
    ]
    points[1].update(status="failed", cls_obs=None, cls_exp=None, reason="test: masked")  # (100, 1)
    return {
        "analysis": "ATLAS-SUSY-2018-04 (stau)",
        "parameters": ["m_stau", "m_LSP"],
        "units": ["GeV", "GeV"],
        "labels": [r"$m(\tilde{\tau})$", r"$m(\tilde{\chi}^0_1)$"],
        "points": points,
    }


def test_stau_contour_figure(tmp_path, stau_results):
    cs = contours_from_results(stau_results)
    assert cs.mirror is True  # all points have m_LSP <= m_stau
    (obs,) = cs.lines["observed"]
    # published (arXiv:1911.06660): stau masses 120-390 GeV excluded for a massless LSP
    low = obs[obs[:, 1] < 5.0, 0]
    assert low.min() == pytest.approx(110, abs=12) and low.max() == pytest.approx(400, abs=15)
    assert 150 < obs[:, 1].max() < 200  # LSP masses up to ~170 GeV excluded
    ref = tmp_path / "published.txt"
    ref.write_text("# x y\n120 0\n200 100\n300 140\n390 0\n")
    fig = plot_contours(stau_results, cs, png=tmp_path / "stau.png", pdf=tmp_path / "stau.pdf", reference=ref)
    ax = fig.axes[0]
    assert ax.get_xlabel() == r"$m(\tilde{\tau})$ [GeV]" and ax.get_ylabel() == r"$m(\tilde{\chi}^0_1)$ [GeV]"
    labels = ax.get_legend_handles_labels()[1]
    assert {"Observed", "Expected", "published", "failed fits (1)"} <= set(labels)
    img = check_png(tmp_path / "stau.png")
    assert colour_pixels(img, COLORS["failed"], tol=0.05) > 10
    assert colour_pixels(img, COLORS["reference"], tol=0.1) > 300
    assert (tmp_path / "stau.pdf").read_bytes()[:5] == b"%PDF-"


def demo_results():
    """The demo analysis on a 15-point subset, with real pyhf fits (~0.3 s each)."""
    from recastfit import demo
    from recastfit.infer import hypotest_batch
    from recastfit.patches import build_patch
    from recastfit.results import FitSettings, PatchTask

    bkg = demo.background_workspace()
    grid = [(m1, m2) for m1, m2 in demo.demo_grid() if 600 <= m1 <= 900 and m2 % 200 == 0 and m2 <= 600]
    tasks = [PatchTask(p.name, p.values, build_patch(bkg, p)) for p in demo.demo_points(grid)]
    results = hypotest_batch(bkg, tasks, FitSettings(engine="pyhf"))
    return {
        "analysis": "demo",
        "parameters": demo.PARAMETERS,
        "units": demo.UNITS,
        "labels": demo.LABELS,
        "settings": FitSettings().__dict__,
        "points": [r.to_dict() for r in results],
    }


def test_demo_contour_cli_figure(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(demo_results()))
    rc = main(
        [
            "--quiet",
            "contour",
            str(path),
            "--json",
            str(tmp_path / "contour.json"),
            "--yaml",
            str(tmp_path / "contour.yaml"),
            "--png",
            str(tmp_path / "demo.png"),
            "--pdf",
            str(tmp_path / "demo.pdf"),
            "--title",
            "demo",
            "--style",
            "atlas",
        ]
    )
    assert rc == 0
    d = json.loads((tmp_path / "contour.json").read_text())
    obs = np.vstack(d["lines"]["observed"])
    # observed CLs at m_LSP = 0: 0.0098 at 700 GeV, 0.205 at 800 GeV -> the line crosses in between
    at0 = obs[obs[:, 1] < 5.0, 0]
    assert len(at0) and 700 < at0.min() < 800
    check_png(tmp_path / "demo.png", min_ink=0.05)
    assert (tmp_path / "demo.pdf").stat().st_size > 5000
