"""Small CLI things users hit: `recastfit --version` and the fit summary counted by status."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from recastfit.cli import build_parser, main, version_string
from recastfit.cli.fit import summary_line


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == version_string()
    assert out.startswith(f"recastfit {metadata.version('recastfit')} (Python ")
    assert f"pyhf {metadata.version('pyhf')}" in out
    # no verb is needed with --version, but one still is without it
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([])
    assert exc.value.code == 2


def point(status, reason=None):
    p = {"name": "p", "values": [1.0, 2.0], "status": status}
    if status == "ok":
        p.update(cls_obs=0.1, cls_exp=[0.1] * 5)
    else:
        p.update(cls_obs=None, cls_exp=None, reason=reason)
    return p


@pytest.mark.parametrize(
    "points,want",
    [
        # the case from the issue: every point flagged failed by the engine, none raised
        (
            [point("failed", "ModuleNotFoundError: No module named 'jax'\nTraceback ...")] * 66,
            "recastfit fit: 66 points: 0 ok, 66 failed (ModuleNotFoundError: No module named 'jax': 66)",
        ),
        ([point("ok")] * 3, "recastfit fit: 3 points: 3 ok, 0 failed"),
        (
            [point("ok"), point("failed", "fit did not converge"), point("failed", "fit did not converge")],
            "recastfit fit: 3 points: 1 ok, 2 failed (fit did not converge: 2)",
        ),
        (
            [point("failed", f"reason {i}") for i in range(5)] + [point("failed")],
            "recastfit fit: 6 points: 0 ok, 6 failed "
            "(reason 0: 1; reason 1: 1; reason 2: 1; 3 other reasons)",
        ),
        ([], "recastfit fit: 0 points: 0 ok, 0 failed"),
    ],
)
def test_summary_line(points, want):
    assert summary_line({"points": points}) == want


def test_summary_line_from_results_file(tmp_path):
    """The line the `fit` verb prints comes from the results.json it has just written."""
    from recastfit.fileio import load_json_file

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"points": [point("failed", "boom")] * 2 + [point("ok")]}))
    assert summary_line(load_json_file(path)) == "recastfit fit: 3 points: 1 ok, 2 failed (boom: 2)"
