"""A point whose fit raises is a `failed` result, not a crash: the fit step writes results.json with
every other point `ok` and the contour is drawn from them. results.json is never stale: when a store
holds fits newer than results.json, the next run rewrites it (and the contour) without refitting."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.workflow_util import copy_workflow, run_snakemake

# the session's demo run (conftest.demo_workflow) is made once per pytest worker: keep its users on one
pytestmark = pytest.mark.xdist_group("demo_workflow")


def test_failing_point_is_a_result_and_outputs_are_never_stale(demo_workflow, tmp_path) -> None:
    """Starts from a copy of the session's demo run: only the changed point is fitted again."""
    wf = copy_workflow(demo_workflow, tmp_path / "wf")
    yields = wf / "demo" / "signal_yields.json"
    data = json.loads(yields.read_text())
    bad = next(p for p in data["points"] if p["name"] == "demo_900_800")
    bad["channels"]["SRA"]["yields"] = [1e12] * 4  # accepted as input (finite, <= 1e15); the fit raises
    yields.write_text(json.dumps(data))
    cfg = (wf / "workflows/config/config.yaml").read_text().replace("demo: demo ", "demo: null ")
    (wf / "mine.yaml").write_text(cfg)

    run_snakemake(wf, "--configfile", "mine.yaml")
    out = wf / "results" / "demo"
    log = (out / "logs" / "gather.log").read_text().splitlines()[-1]
    assert "54 points: 53 ok, 1 failed; 1 fitted now, 53 from the store" in log, log
    res = {p["name"]: p for p in json.loads((out / "results.json").read_text())["points"]}
    assert len(res) == 54
    failed = [n for n, p in res.items() if p["status"] == "failed"]
    assert failed == ["demo_900_800"], failed
    assert res["demo_900_800"]["cls_obs"] is None and res["demo_900_800"]["reason"]
    assert all(p["status"] == "ok" and 0 <= p["cls_obs"] <= 1 for n, p in res.items() if n != "demo_900_800")
    contour = json.loads((out / "contour.json").read_text())
    assert contour["lines"]["observed"] and (out / "contour.png").stat().st_size > 10_000

    # a run killed after its fits were stored but before results.json was rewritten: results.json is
    # older than the store's newest row -> the README command regathers and redraws, refitting nothing
    old = time.time() - 3600
    os.utime(out / "results.json", (old, old))
    before = (out / "contour.json").stat().st_mtime
    run_snakemake(wf, "--configfile", "mine.yaml")
    assert (out / "contour.json").stat().st_mtime > before
    log = (out / "logs" / "gather.log").read_text().splitlines()[-1]
    assert "54 points: 53 ok, 1 failed; 0 fitted now, 54 from the store" in log, log
