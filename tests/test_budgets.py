"""Budgets (issue 13): time and memory of every batch bounded from outside the computing process.

Real worker processes that really hang (blocked on an event, as a wedged XLA call is) or
really allocate; the watchdog kills them, the runner splits the batch and fails only the
culprit, with the reason.
"""

from __future__ import annotations

import os
import sqlite3
import time
from functools import partial
from pathlib import Path

import pytest

from recastfit.backends import BackendConfig
from recastfit.backends.local import LocalBackend
from recastfit.backends.supervisor import BudgetExceeded, Supervisor, rss_bytes
from recastfit.backends.worker import BkgRef, bounded_batch, close_supervisor, run_batch
from recastfit.results import FitSettings, digest
from recastfit.runner import default_batch_size, model_parameters, run_fits
from tests.test_backends import (  # noqa: F401 (reference is a fixture)
    balloon_for,
    deadline_for,
    flag_failed,
    hang_for,
    numbers,
    reference,
    reporting_batch,
    synth_bkg,
    synth_tasks,
)


@pytest.fixture
def short_startup(monkeypatch) -> None:
    """Ten seconds of start-up allowance per batch (default 120 s) so that tests stay short; enough for a
    worker to start while the other pytest worker loads the second core (5 s was not, at load 9)."""
    monkeypatch.setenv("RECASTFIT_WORKER_STARTUP", "10")


def _errors(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT name, error FROM results"))


def test_hanging_point_is_split_out_then_failed_with_timeout(
    reference,  # noqa: F811
    tmp_path: Path,
    short_startup,
) -> None:
    db = tmp_path / "r.sqlite"
    t0 = time.monotonic()
    summary = run_fits(
        synth_bkg(),
        synth_tasks(6),
        FitSettings(),
        BackendConfig(batch_size=2, workers=2),
        db,
        cores=2,
        quiet=True,
        timeout_s=0.5,
        task_fn=partial(hang_for, ("p02",)),
    )
    elapsed = time.monotonic() - t0
    by_name = {r.name: r for r in summary.results}
    assert (summary.done, summary.failed, summary.splits, summary.exit_code) == (5, 1, 1, 0)
    # batch [p02, p03] overran 0.5 s x 2 + 10 s, was split; p02 alone overran 0.5 s + 10 s
    assert by_name["p02"].status == "failed" and by_name["p02"].reason == "timeout after 10 s"
    assert numbers([r for r in summary.results if r.name != "p02"]) == numbers(
        [r for r in reference[:6] if r.name != "p02"]
    )
    assert _errors(db)["p02"] == 1  # retried by the next run (perhaps with a larger fit.timeout)
    assert elapsed < 45, elapsed


def test_memory_balloon_is_killed_at_the_cap_and_only_its_point_fails(
    reference,  # noqa: F811
    tmp_path: Path,
    short_startup,
) -> None:
    summary = run_fits(
        synth_bkg(),
        synth_tasks(4),
        FitSettings(),
        BackendConfig(batch_size=2, workers=1),
        tmp_path / "r.sqlite",
        cores=1,
        quiet=True,
        timeout_s=20,
        max_memory_mb=250,
        task_fn=partial(balloon_for, ("p01",)),
    )
    by_name = {r.name: r for r in summary.results}
    assert (summary.done, summary.failed, summary.splits) == (3, 1, 1)
    assert by_name["p01"].reason.startswith("worker exceeded 250 MB (resident ")
    assert numbers([r for r in summary.results if r.name != "p01"]) == numbers(
        [r for r in reference[:4] if r.name != "p01"]
    )


def test_supervisor_kills_and_replaces_its_child() -> None:
    sup = Supervisor(rss_cap=1 << 30)
    try:
        assert sup.call(os.getpid) == sup.pid != os.getpid()
        first = sup.pid
        t0 = time.monotonic()
        with pytest.raises(BudgetExceeded, match="timeout after 1 s"):
            sup.call(time.sleep, (60,), budget_s=1.0)
        assert time.monotonic() - t0 < 5 and not sup.alive
        assert sup.call(os.getpid) != first and sup.starts == 2  # a fresh child, same supervisor
        cap = rss_bytes(sup.pid) + (50 << 20)
        with pytest.raises(BudgetExceeded, match=f"worker exceeded {cap >> 20} MB"):
            sup.call(bytearray, (500 << 20,), budget_s=30, rss_cap=cap)
    finally:
        sup.close()


def test_remote_workers_bound_their_own_compute_child(short_startup) -> None:
    """What parsl/dask/Globus Compute workers run: a supervised child, answering ``budget``."""
    spec, tasks = synth_bkg(), synth_tasks(2)
    ref = BkgRef(digest(spec), spec=spec)
    try:
        t0 = time.monotonic()
        out = bounded_batch(partial(hang_for, ("p00",)), 1.5, 1 << 30, ref, tasks, FitSettings())
        assert out == {"budget": "timeout after 2 s"} and time.monotonic() - t0 < 10
        out = bounded_batch(run_batch, 30.0, 1 << 30, ref, tasks, FitSettings())
        assert [p["result"]["status"] for p in out["points"]] == ["ok", "ok"]
        assert bounded_batch(run_batch, 30.0, 1 << 30, BkgRef("0" * 64), tasks, FitSettings()) == {
            "missing_background": "0" * 64
        }
    finally:
        close_supervisor()


def test_progress_reported_inside_a_batch_arrives_before_it_ends() -> None:
    spec = synth_bkg()
    seen: list[float] = []
    with LocalBackend(workers=1) as ex:
        ref = ex.ship_background(spec, digest(spec))
        fut = ex.submit_batch(
            reporting_batch,
            (ref, synth_tasks(3), FitSettings()),
            budget_s=60,
            progress=lambda n: seen.extend([time.monotonic()] * n),
        )
        out = fut.result()
        ended = time.monotonic()
    assert len(out["points"]) == 3 and len(seen) == 3
    assert seen[1] - seen[0] > 0.3 and seen[2] - seen[1] > 0.3  # one by one, as they finished
    assert seen[-1] < ended


def test_engine_flagged_failures_are_counted_as_failed(tmp_path: Path, capsys) -> None:
    summary = run_fits(
        synth_bkg(),
        synth_tasks(4),
        FitSettings(),
        BackendConfig(workers=2),
        tmp_path / "r.sqlite",
        task_fn=flag_failed,
    )
    assert (summary.done, summary.failed, summary.exit_code) == (0, 4, 0)
    assert summary.batch_size == 2  # pyhf's default 4, cut so that both workers get points
    assert "4 points: 0 done, 4 failed, 0 skipped" in capsys.readouterr().err
    assert summary.errors == {f"p{i:02d}": "fit did not converge" for i in range(4)}


def test_default_batch_size_follows_engine_and_model() -> None:
    import recastfit.infer as infer

    small = synth_bkg()
    assert model_parameters(small) == 1 + 3 + 2  # bkg_norm + staterror per bin
    assert default_batch_size(FitSettings(), small) == 4
    if hasattr(infer, "suggested_batch_size"):  # the engine knows its own memory best
        assert default_batch_size(FitSettings(engine="fast"), small) == infer.suggested_batch_size(small)
        return
    assert default_batch_size(FitSettings(engine="fast"), small) == 256
    big = {
        "channels": [
            {
                "name": f"c{i}",
                "samples": [
                    {
                        "name": "b",
                        "data": [1.0],
                        "modifiers": [{"name": f"n{i}_{j}", "type": "normsys"} for j in range(6)],
                    }
                ],
            }
            for i in range(45)
        ]
    }
    assert model_parameters(big) == 270
    assert default_batch_size(FitSettings(engine="fast"), big) == 64


def test_points_the_engine_stopped_at_its_deadline_are_split_and_retried(reference, tmp_path: Path) -> None:  # noqa: F811
    summary = run_fits(
        synth_bkg(),
        synth_tasks(4),
        FitSettings(),
        BackendConfig(batch_size=4, workers=1),
        tmp_path / "r.sqlite",
        quiet=True,
        timeout_s=2,
        task_fn=partial(deadline_for, ("p01", "p02")),
    )
    by_name = {r.name: r for r in summary.results}
    assert (summary.done, summary.failed, summary.splits) == (2, 2, 1)  # [p01, p02] -> [p01], [p02]
    assert by_name["p01"].reason == by_name["p02"].reason == "timeout after 2 s"
    assert numbers([by_name["p00"], by_name["p03"]]) == numbers([reference[0], reference[3]])
    assert _errors(tmp_path / "r.sqlite") == {"p00": 0, "p01": 1, "p02": 1, "p03": 0}


def test_engine_hooks_progress_as_increments_and_a_deadline(monkeypatch) -> None:
    """``run_batch`` hands the engine ``progress(done, total)`` and ``deadline`` when it takes them."""
    import recastfit.infer as infer
    from recastfit.results import HypotestResult

    seen: dict = {}

    def engine(spec, tasks, settings, *, progress=None, deadline=None):
        seen["deadline_in"] = None if deadline is None else deadline - time.monotonic()
        for done in (1, 1, 3):  # cumulative, repeated values allowed
            progress(done, len(tasks))
        return [HypotestResult(t.name, list(t.values), "ok", 0.5, [0.5] * 5, 1.0) for t in tasks]

    monkeypatch.setattr(infer, "hypotest_batch", engine)
    monkeypatch.setenv("RECASTFIT_WORKER_STARTUP", "4")
    steps: list[int] = []
    spec = synth_bkg()
    settings = FitSettings()
    if "timeout" in FitSettings.__dataclass_fields__:
        settings = FitSettings(timeout=2.0)
    out = run_batch(BkgRef(digest(spec), spec=spec), synth_tasks(3), settings, progress=steps.append)
    assert steps == [1, 2] and [p["result"]["status"] for p in out["points"]] == ["ok"] * 3
    if "timeout" in FitSettings.__dataclass_fields__:
        assert 7.0 < seen["deadline_in"] <= 8.0  # 2 s per point x 3 points + half of 4 s


def test_dask_workers_enforce_the_budget_too(reference, tmp_path: Path, short_startup) -> None:  # noqa: F811
    """A real dask LocalCluster: the worker's own supervised child hangs, is killed, the point fails."""
    import psutil

    started = time.time()
    summary = run_fits(
        synth_bkg(),
        synth_tasks(3),
        FitSettings(),
        BackendConfig(name="dask", batch_size=1, workers=2, run_dir=str(tmp_path / "run")),
        tmp_path / "r.sqlite",
        cores=2,
        quiet=True,
        timeout_s=0.5,
        task_fn=partial(hang_for, ("p01",)),
    )
    by_name = {r.name: r for r in summary.results}
    assert (summary.done, summary.failed) == (2, 1)
    assert by_name["p01"].reason == "timeout after 10 s"  # 0.5 s + 10 s, enforced inside the dask worker
    assert numbers([by_name["p00"], by_name["p02"]]) == numbers([reference[0], reference[2]])
    # the workers' compute children went with the cluster: no orphans left behind
    time.sleep(2)
    orphans = [
        p
        for p in psutil.process_iter(["cmdline", "create_time"])
        if p.info["create_time"] >= started and "child_main" in " ".join(p.info["cmdline"] or [])
    ]
    assert not orphans, orphans
