"""Hostile inputs to fetching: each row ends in a named error within 10 s and 500 MB, markers untouched."""

from __future__ import annotations

import time

import pytest

from tests.hostile import MEMORY, TIMEOUT, check_markers, planted_markers, run_bounded


def test_harness_reports_named_errors_and_bounds(tmp_path):
    """The harness itself: the error's name and message, a timeout kill, a memory kill, output capture."""
    from recastfit.errors import FetchError

    def boom():
        print("hello from the child")
        raise FetchError("no such pallet")

    out = run_bounded(boom)
    out.expect("FetchError", "no such pallet")
    assert out.recastfit and "hello from the child" in out.output and out.seconds < 5

    out = run_bounded(lambda: time.sleep(30), seconds=0.5)
    assert out.error == TIMEOUT and 0.5 <= out.seconds < 3 and not out.bounded

    def hog():
        blocks = []
        while True:
            blocks.append(bytearray(16 << 20))
            for i in range(0, len(blocks[-1]), 4096):
                blocks[-1][i] = 1

    out = run_bounded(hog, max_mb=150)
    assert out.error == MEMORY and out.peak_mb > 150

    assert run_bounded(lambda: 41 + 1).result == "42"

    # memory is counted above what the child inherits at fork
    ballast = bytearray(300 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    out = run_bounded(lambda: len(ballast), max_mb=100)
    assert out.error is None and out.peak_mb < 50 and out.rss_mb > 300
    ballast.clear()

    markers = planted_markers(tmp_path)
    check_markers(markers)
    markers.secret.write_text("{}")
    with pytest.raises(AssertionError, match="changed="):
        check_markers(markers)
