"""Snakemake-native fan-out: the fit split into fit.jobs = 4 jobs gives exactly the one-job results."""

from __future__ import annotations

import json

import pytest

from tests.workflow_util import new_workflow, run_snakemake

# the session's demo run (conftest.demo_workflow) is made once per pytest worker: keep its users on one
pytestmark = pytest.mark.xdist_group("demo_workflow")


def _results(wf) -> dict[str, dict]:
    doc = json.loads((wf / "results" / "demo" / "results.json").read_text())
    return {p["name"]: p for p in doc["points"]}


def test_four_jobs_equal_one_job(demo_workflow, tmp_path) -> None:
    """A fresh 4-job run (every point fitted again) against the session's one-job demo run."""
    one = demo_workflow
    four = new_workflow(tmp_path / "four")
    base = (four / "workflows" / "config" / "config.yaml").read_text()
    (four / "four.yaml").write_text(
        base.replace("calctype: asymptotics", "calctype: asymptotics\n  jobs: 4\n  threads: 1")
    )
    proc = run_snakemake(four, "--configfile", "four.yaml", cores=4)
    parts = sorted(p.name for p in (four / "results" / "demo" / "parts").glob("*.json"))
    assert parts == [f"{k}-of-4.json" for k in range(4)], parts
    shares = [json.loads((four / "results" / "demo" / "parts" / p).read_text())["points"] for p in parts]
    assert sum(shares) == 54 and all(s > 0 for s in shares), shares
    assert proc.stderr.count("rule fit_part") >= 4 or proc.stdout.count("rule fit_part") >= 4
    a, b = _results(one), _results(four)
    assert a.keys() == b.keys() and len(a) == 54
    for name, p in a.items():
        q = b[name]
        assert p["status"] == q["status"] == "ok"
        assert q["cls_obs"] == p["cls_obs"] and q["cls_exp"] == p["cls_exp"], name
