"""Hostile inputs to the contour outputs: each row must end in a named error within 10 s and 500 MB,
and nothing outside the results folder may change (marker files are planted there and checked).

``tests/hostile.py`` is not on main yet, so the small harness lives here."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from recastfit.contour import ContourOptions, draw_contour_files
from recastfit.errors import RecastfitError

LIMIT_S, LIMIT_BYTES = 10.0, 500 << 20


def ok_point(i, x, y, cls=0.5):
    return {"name": f"p{i}", "values": [x, y], "status": "ok", "cls_obs": cls, "cls_exp": [cls] * 5}


def grid_results(n=6):
    pts = [ok_point(i * n + j, 100.0 * i, 100.0 * j, 0.02 * (i + 1)) for i in range(n) for j in range(n)]
    return {"analysis": "h", "parameters": ["m1", "m2"], "units": ["GeV", "GeV"], "points": pts}


def write(text: str) -> Callable[[Path, Path], tuple[Path, ContourOptions]]:
    def build(res_dir: Path, outside: Path) -> tuple[Path, ContourOptions]:
        path = res_dir / "results.json"
        path.write_text(text)
        return path, ContourOptions()

    return build


def results_with(**changes) -> str:
    doc = grid_results()
    doc["points"][0] = {**doc["points"][0], **changes}
    return json.dumps(doc)


def with_reference(text: str | None, name: str = "ref.yaml", link_to: str | None = None):
    def build(res_dir: Path, outside: Path) -> tuple[Path, ContourOptions]:
        path = res_dir / "results.json"
        path.write_text(json.dumps(grid_results()))
        ref = res_dir / name
        if link_to is not None:
            ref.symlink_to(link_to)
        elif text is None:
            ref.mkdir()
        else:
            ref.write_text(text)
        return path, ContourOptions(reference=str(ref), mirror="none", method="linear", resolution=60)

    return build


def hepdata_link(res_dir: Path, outside: Path) -> tuple[Path, ContourOptions]:
    """The submission folder is a link to a folder outside: it must not be followed or replaced."""
    path = res_dir / "results.json"
    path.write_text(json.dumps(grid_results()))
    (res_dir / "out").mkdir()
    (res_dir / "out" / "hepdata").symlink_to(outside)
    return path, ContourOptions(mirror="none", method="linear", resolution=60)


def results_link(target: str):
    def build(res_dir: Path, outside: Path) -> tuple[Path, ContourOptions]:
        path = res_dir / "results.json"
        path.symlink_to(target)
        return path, ContourOptions()

    return build


ROWS = [
    ("NaN literal", write('{"points": [{"values": [1, 2], "cls_obs": NaN}]}'), "not valid JSON"),
    ("deeply nested", write("[" * 200_000 + "]" * 200_000), "nested too deeply|not valid JSON"),
    ("not an object", write('"points"'), "expected a JSON object"),
    ("points not a list", write('{"points": {"a": 1}}'), "points: expected a non-empty list"),
    (
        "values not numbers",
        write(results_with(values=["a", "b"])),
        r"points\[0\]\.values: expected 2 numbers",
    ),
    ("Infinity literal", write(results_with(values=[1e999, 0])), "Infinity is not a JSON number"),
    (
        "values overflow to inf",
        write(results_with(values=["X", 0]).replace('"X"', "1e999")),
        r"points\[0\]\.values: expected finite",
    ),
    ("values overflow the span", write(results_with(values=[-1.7e308, 1.7e308])), "too wide|do not span"),
    ("cls_exp not a list", write(results_with(cls_exp=7)), r"points\[0\]\.cls_exp: expected 5"),
    ("cls_obs a string", write(results_with(cls_obs="low")), r"points\[0\]: expected numeric CLs"),
    (
        "all points on a line",
        write(json.dumps({"points": [ok_point(i, float(i), float(i)) for i in range(10)]})),
        "do not span a 2D region",
    ),
    (
        "two usable points",
        write(json.dumps({"points": [ok_point(0, 0.0, 0.0), ok_point(1, 1.0, 0.0)]})),
        "need at least 3 points",
    ),
    ("results is /dev/zero", results_link("/dev/zero"), "results file is not a regular file"),
    ("reference YAML alias bomb", with_reference('a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n'), "aliases"),
    ("reference is a folder", with_reference(None), "reference contour file is not a regular file"),
    ("reference is /dev/zero", with_reference("", "ref.txt", "/dev/zero"), "is not a regular file"),
    ("reference too large", with_reference("1 2\n" * 300_000, "ref.txt"), "larger than 1048576 bytes"),
    ("hepdata folder is a link outside", hepdata_link, "expected a folder for the HEPData submission"),
]


@pytest.mark.parametrize("name,build,match", ROWS, ids=[r[0] for r in ROWS])
def test_hostile_contour_inputs(tmp_path, monkeypatch, name, build, match):
    monkeypatch.setenv("RECASTFIT_MAX_INPUT_BYTES", str(1 << 20))
    res_dir, outside = tmp_path / "results", tmp_path / "outside"
    res_dir.mkdir()
    outside.mkdir()
    markers = {outside / "marker.txt": "do not touch", tmp_path / "marker.txt": "nor this"}
    for path, text in markers.items():
        path.write_text(text)
    results, options = build(res_dir, outside)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(RecastfitError, match=match):
            # tracemalloc slows matplotlib ~3x: the figure (which reads the reference) only where needed
            draw_contour_files(results, res_dir / "out", options, figure=options.reference is not None)
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < LIMIT_S, f"{name}: {elapsed:.1f} s"
    assert peak < LIMIT_BYTES, f"{name}: {peak / 2**20:.0f} MB"
    for path, text in markers.items():
        assert path.read_text() == text
    assert sorted(p.name for p in outside.iterdir()) == ["marker.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker.txt", "outside", "results"]
    leftovers = [p for p in (res_dir / "out").glob(".*")] if (res_dir / "out").exists() else []
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_output_links_are_replaced_not_followed(tmp_path):
    """contour.json / contour.png planted as links to files outside: the links are replaced."""
    res_dir, outside = tmp_path / "results", tmp_path / "outside"
    (res_dir / "out").mkdir(parents=True)
    outside.mkdir()
    victims = {}
    for name in ("contour.json", "contour.yaml", "contour.png", "contour.pdf"):
        victim = outside / f"victim-{name}"
        victim.write_text("precious")
        (res_dir / "out" / name).symlink_to(victim)
        victims[name] = victim
    path = res_dir / "results.json"
    path.write_text(json.dumps(grid_results()))
    draw_contour_files(path, res_dir / "out", ContourOptions(mirror="none", method="linear", resolution=60))
    for name, victim in victims.items():
        assert victim.read_text() == "precious"
        assert not (res_dir / "out" / name).is_symlink() and (res_dir / "out" / name).stat().st_size > 100
    assert not os.listdir(outside) == [] and sorted(os.listdir(outside)) == sorted(
        v.name for v in victims.values()
    )
