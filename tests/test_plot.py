"""Contour figures for the stau grid (shared pyhf reference CLs) and the demo analysis (real pyhf fits):
lines, +-1/2 sigma bands, the sqrt(s) / luminosity / analysis text, mplhep styles with tick labels that
never collide, and the several-analyses overlay."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from recastfit.cli import main
from recastfit.contour import ContourOptions, contours_from_results, figure_from_results, results_arrays
from recastfit.errors import InputError
from recastfit.plot import COLORS, draw_overlay, plot_contours, tick_label_overlaps


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
    fig = figure_from_results(
        stau_results,
        cs,
        png=tmp_path / "stau.png",
        pdf=tmp_path / "stau.pdf",
        reference=ref,
        show_band2=False,
    )
    ax = fig.axes[0]
    assert ax.get_xlabel() == r"$m(\tilde{\tau})$ [GeV]" and ax.get_ylabel() == r"$m(\tilde{\chi}^0_1)$ [GeV]"
    labels = ax.get_legend_handles_labels()[1]
    assert {"Observed", "Expected", "published", "failed fits (1)"} <= set(labels)
    img = check_png(tmp_path / "stau.png")
    assert colour_pixels(img, COLORS["failed"], tol=0.05) > 10
    assert colour_pixels(img, COLORS["reference"], tol=0.1) > 300
    assert (tmp_path / "stau.pdf").read_bytes()[:5] == b"%PDF-"
    assert colour_pixels(img, COLORS["band2"], tol=0.05) == 0  # +-2 sigma band off here
    assert tick_label_overlaps(fig) == []


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


@pytest.fixture(scope="module")
def demo():
    return demo_results()


def test_demo_contour_cli_figure(tmp_path, demo):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(demo))
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


def test_band2_label_and_text(tmp_path, demo):
    cs = contours_from_results(demo)
    arrays = results_arrays(demo)
    fig = plot_contours(
        arrays, cs, png=tmp_path / "d.png", sqrts="13 TeV", lumi="139 fb$^{-1}$", label="demo 2L", title=""
    )
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "demo 2L\n\u221as = 13 TeV, 139 fb$^{-1}$\nAll limits at 95% CL"
    labels = ax.get_legend_handles_labels()[1]
    assert {r"Expected $\pm 1\sigma$", r"Expected $\pm 2\sigma$", "Observed", "Expected"} <= set(labels)
    img = check_png(tmp_path / "d.png", min_ink=0.05)
    assert colour_pixels(img, COLORS["band2"], tol=0.05) > 2000  # on by default
    # the legend sits above every grid point: no marker is hidden under it
    fig.canvas.draw()
    box = legend.get_window_extent(fig.canvas.get_renderer())
    pix = ax.transData.transform(arrays["values"])
    assert not np.any((pix[:, 1] > box.y0) & (pix[:, 0] > box.x0) & (pix[:, 0] < box.x1))


def wide_results(n=11):
    """A wide grid (100..1500 GeV) whose default ticks are dense: CLs from a smooth surface."""
    from scipy.stats import norm

    pts = [(x, y) for x in np.linspace(100, 1500, n) for y in np.linspace(0, 1400, n) if y < x]
    z = [2.5 - (x / 600) - (y / 900) for x, y in pts]
    return {
        "analysis": "wide",
        "parameters": ["m1", "m2"],
        "units": ["GeV", "GeV"],
        "labels": [r"$m(\tilde{\chi}^{\pm}_{1}/\tilde{\chi}^{0}_{2})$", r"$m(\tilde{\chi}^{0}_{1})$"],
        "points": [
            {
                "name": f"p{i}",
                "values": [float(x), float(y)],
                "status": "ok",
                "cls_obs": float(norm.sf(zz)),
                "cls_exp": [float(norm.sf(zz + d)) for d in (0.8, 0.4, 0.0, -0.4, -0.8)],
            }
            for i, ((x, y), zz) in enumerate(zip(pts, z, strict=True))
        ],
    }


@pytest.mark.parametrize("style", ["atlas", "cms", "plain"])
def test_ticks_do_not_collide(tmp_path, style):
    res = wide_results()
    cs = contours_from_results(res, resolution=120)
    fig = plot_contours(results_arrays(res), cs, png=tmp_path / f"{style}.png", style=style, sqrts="13 TeV")
    assert tick_label_overlaps(fig) == []
    xticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert 3 <= len(xticks) <= 8, xticks


def test_tick_overlap_detector_sees_collisions():
    """The check above is not vacuous: 30 ticks with the ATLAS font do collide and are found."""
    import matplotlib.style
    import mplhep
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    with matplotlib.style.context(mplhep.style.ATLAS):
        fig = Figure(figsize=(7.0, 5.6))
        ax = fig.add_subplot()
        ax.set_xlim(100, 1500)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=30))
        found = tick_label_overlaps(fig)
    assert found and {f[1] for f in found} == {"x"}


def test_overlay_two_analyses(tmp_path, demo):
    a = tmp_path / "a" / "contour.json"
    b = tmp_path / "b" / "contour.json"
    contours_from_results(demo).to_json(a)
    shifted = {**demo, "analysis": "demo-shifted"}
    shifted["points"] = [{**p, "values": [p["values"][0] + 80.0, p["values"][1]]} for p in demo["points"]]
    contours_from_results(shifted).to_json(b)
    opts = ContourOptions(sqrts="13 TeV", lumi="139 fb$^{-1}$", style="atlas", title="two analyses")
    fig = draw_overlay(
        [a, b], ["demo", "shifted"], tmp_path / "overlay.png", opts, pdf=tmp_path / "overlay.pdf"
    )
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["demo (observed)", "demo (expected)", "shifted (observed)", "shifted (expected)"]
    # the shifted analysis' observed line lies 80 GeV to the right of the first one's
    lines = [
        ln for ln in fig.axes[0].get_lines() if ln.get_label() in ("demo (observed)", "shifted (observed)")
    ]
    from scipy.spatial import cKDTree

    first = np.c_[lines[0].get_xdata(), lines[0].get_ydata()]
    second = np.c_[lines[1].get_xdata() - 80.0, lines[1].get_ydata()]
    assert cKDTree(first).query(second)[0].max() < 2.0
    img = mpimg.imread(tmp_path / "overlay.png")
    from recastfit.plot import OVERLAY_COLORS

    assert colour_pixels(img, OVERLAY_COLORS[0]) > 300 and colour_pixels(img, OVERLAY_COLORS[1]) > 300
    assert (tmp_path / "overlay.pdf").read_bytes()[:5] == b"%PDF-"
    assert tick_label_overlaps(fig) == []
    other = tmp_path / "c" / "contour.json"
    other.parent.mkdir()
    other.write_text(json.dumps({"parameters": ["mx", "my"], "lines": {"observed": []}}))
    with pytest.raises(InputError, match=r"c/contour\.json: parameters: expected the same grid parameters"):
        draw_overlay([a, other], None, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
