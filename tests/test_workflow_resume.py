"""kill -9 in the middle of the fit, then the README command alone resumes and refits only what is
missing (profiles/default sets rerun-incomplete; recastfit removes locks whose owner is dead)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

from tests.workflow_util import SNAKEMAKE, new_workflow, run_snakemake


def _stored(path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_kill_9_then_readme_command_resumes(tmp_path) -> None:
    wf = new_workflow(tmp_path)
    # slow the fit down so the kill lands mid-run: one point per task, one worker
    (wf / "slow.yaml").write_text(
        (wf / "workflows" / "config" / "config.yaml")
        .read_text()
        .replace("retries: 2", "retries: 2\n  batch_size: 1")
    )
    cmd = [*SNAKEMAKE, "--cores", "1", "contour", "--configfile", "slow.yaml"]
    env = {**os.environ, "RECASTFIT_QUIET": "1"}
    proc = subprocess.Popen(
        cmd, cwd=wf, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    part_store = wf / "results" / "demo" / "parts" / "0-of-1.sqlite"
    deadline = time.monotonic() + 240
    while _stored(part_store) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it started
    proc.wait()
    before = _stored(part_store)
    assert 5 <= before < 54
    assert any((wf / ".snakemake" / "locks").iterdir())  # the killed run left its locks

    done = run_snakemake(wf, "--configfile", "slow.yaml", cores=1)  # the README command, nothing else
    res = json.loads((wf / "results" / "demo" / "results.json").read_text())
    assert len(res["points"]) == 54 and all(p["status"] == "ok" for p in res["points"])
    gather_log = (wf / "results" / "demo" / "logs" / "gather.log").read_text()
    fitted_now = 54 - before
    assert f"54 points: 54 ok, 0 failed; {fitted_now} fitted now" in gather_log + done.stderr, gather_log
    assert (wf / "results" / "demo" / "contour.png").stat().st_size > 10_000
