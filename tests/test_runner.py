"""The fit driver: SIGKILL and resume, a worker that dies mid-task, retries, summary, progress."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import psutil

from recastfit.backends import BackendConfig
from recastfit.progress import Progress, format_duration
from recastfit.results import FitSettings, PatchTask
from recastfit.runner import run_fits
from recastfit.store import ResultStore
from tests.test_backends import (  # noqa: F401 (reference is a fixture)
    crash_once,
    numbers,
    raise_for,
    reference,
    synth_bkg,
    synth_tasks,
)

ROOT = Path(__file__).resolve().parent.parent
LOCAL2 = BackendConfig(name="local", batch_size=2, workers=2, retries=2)


def _rows(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(db) as con:
        return {
            p: (r, c, res)
            for p, r, c, res in con.execute("SELECT patch, run_id, created, result FROM results")
        }


def _rows_or_none(db: Path) -> dict[str, tuple]:
    """The rows, or none while the driver is still creating the store (table not there yet)."""
    try:
        return _rows(db)
    except sqlite3.OperationalError:
        return {}


def test_sigkill_midway_then_resume_recomputes_only_missing(reference, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "r.sqlite"
    driver = (
        "from functools import partial; from pathlib import Path; "
        "from recastfit.backends import BackendConfig; from recastfit.results import FitSettings; "
        "from recastfit.runner import run_fits; "
        "from tests.test_backends import slow_batch, synth_bkg, synth_tasks; "
        f"run_fits(synth_bkg(), synth_tasks(), FitSettings(), BackendConfig(batch_size=1, workers=2), "
        f"Path({str(db)!r}), cores=2, quiet=True, task_fn=partial(slow_batch, 0.25))"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if db.exists() and len(_rows_or_none(db)) >= 6:
                break
            assert proc.poll() is None, "driver ended before it could be killed"
            time.sleep(0.1)
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # orphaned pool workers notice their parent is gone and exit on their own
    _, alive = psutil.wait_procs(workers, timeout=15)
    for p in alive:
        p.kill()
    assert not alive, f"pool workers outlived the killed driver: {alive}"

    before = _rows(db)
    assert 6 <= len(before) < 20  # killed part-way
    summary = run_fits(synth_bkg(), synth_tasks(), FitSettings(), LOCAL2, db, cores=2, quiet=True)
    after = _rows(db)
    assert (summary.skipped, summary.done, summary.failed) == (len(before), 20 - len(before), 0)
    # every answered task reports the worker's own wall and CPU seconds (the scan's time accounting)
    assert sum(n for _, n, _, _ in summary.batches) == 20 - len(before)
    assert all(wall > 0 and cpu >= 0 for _, _, wall, cpu in summary.batches)
    assert summary.engine_wall >= max(wall for _, _, wall, _ in summary.batches)
    assert len(after) == 20  # none missing
    assert {p: after[p] for p in before} == before  # none of the finished points was recomputed
    assert len({after[p][0] for p in after if p not in before}) == 1  # the rest: all from the second run
    assert numbers(summary.results) == numbers(reference)


def test_worker_exiting_hard_is_retried_and_scan_completes(reference, tmp_path: Path) -> None:  # noqa: F811
    sentinel = tmp_path / "crashed"
    summary = run_fits(
        synth_bkg(),
        synth_tasks(),
        FitSettings(),
        LOCAL2,
        tmp_path / "r.sqlite",
        cores=2,
        quiet=True,
        task_fn=partial(crash_once, str(sentinel)),
    )
    assert sentinel.exists()  # a worker really died (os._exit) in the middle of a task
    assert (summary.done, summary.failed) == (20, 0)
    assert summary.retried >= 2  # at least the crashed batch's points went round again
    assert numbers(summary.results) == numbers(reference)
    assert ResultStore(tmp_path / "r.sqlite").count(include_errors=False) == 20


def test_failing_point_is_retried_then_recorded_and_rerun_later(reference, tmp_path: Path, capsys) -> None:  # noqa: F811
    db = tmp_path / "r.sqlite"
    tasks = synth_tasks(8)
    broken = PatchTask("broken", (0.0, 0.0), [{"op": "add", "path": "/channels/9/samples/0", "value": {}}])
    config = BackendConfig(name="local", batch_size=4, workers=2, retries=1)
    summary = run_fits(
        synth_bkg(),
        [*tasks, broken],
        FitSettings(),
        config,
        db,
        cores=2,
        task_fn=partial(raise_for, ("p03",)),
    )
    # a failing point is a result: stored, reported, and the run still succeeds
    assert (summary.done, summary.failed, summary.skipped, summary.exit_code) == (7, 2, 0, 0)
    by_name = {r.name: r for r in summary.results}
    assert by_name["p03"].status == "failed" and "injected failure for ['p03']" in by_name["p03"].reason
    assert by_name["p03"].reason.startswith("failed after 2 attempt(s)")  # 1 try + 1 retry
    assert "JsonPointerException" in by_name["broken"].reason and by_name["broken"].cls_obs is None
    assert numbers([r for r in summary.results if r.name not in ("p03", "broken")]) == numbers(
        [r for r in reference[:8] if r.name != "p03"]
    )
    err = capsys.readouterr().err
    assert "9 points: 7 done, 2 failed, 0 skipped" in err and "failed: p03: failed after 2 attempt(s)" in err
    assert sorted(r["error"] for r in ResultStore(db).rows()) == [0] * 7 + [1, 1]

    # the next run (no injected fault) recomputes only the failed points
    again = run_fits(synth_bkg(), [*tasks, broken], FitSettings(), config, db, cores=2, quiet=True)
    assert (again.done, again.failed, again.skipped, again.exit_code) == (1, 1, 7, 0)
    assert numbers(again.results[:8]) == numbers(reference[:8])


def test_everything_stored_means_no_workers_at_all(tmp_path: Path) -> None:
    db, tasks = tmp_path / "r.sqlite", synth_tasks(3)
    first = run_fits(synth_bkg(), tasks, FitSettings(), BackendConfig(workers=1), db, quiet=True)
    twice = [*tasks, PatchTask("alias", (9.0, 9.0), tasks[1].patch)]  # same patch under another name
    t0 = time.perf_counter()
    again = run_fits(synth_bkg(), twice, FitSettings(), BackendConfig(name="parsl"), db, quiet=True)
    assert time.perf_counter() - t0 < 1.0  # nothing to do: no pool, no cluster started
    assert (again.done, again.skipped, again.failed) == (0, 4, 0)
    assert again.results[3].name == "alias" and again.results[3].cls_obs == first.results[1].cls_obs


def test_progress_line_rate_eta_and_quiet() -> None:
    buf = io.StringIO()
    bar = Progress(10, label="fit", stream=buf, min_interval=0, log_interval=0)
    bar._t0 -= 2.0  # pretend 2 s have passed
    bar.update(4)
    line = buf.getvalue().strip().splitlines()[-1]
    assert line.startswith("fit: 4/10 ( 40.0%)  2.00 pts/s") and "ETA 3s" in line
    silent = io.StringIO()
    quiet = Progress(10, stream=silent, quiet=True, min_interval=0)
    quiet.update(10)
    quiet.write("hello")
    quiet.close()
    assert silent.getvalue() == ""
    assert [format_duration(s) for s in (5, 75, 3700, float("nan"))] == ["5s", "1m15s", "1h01m", "?"]
