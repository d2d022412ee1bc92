"""Hostile rows for the back ends: what a remote endpoint or a runaway worker can send back.

Each row must end in failed points carrying a named reason (the run itself completes),
within 10 s and 500 MB (peak resident memory of this process and its children above the
start), with marker files planted outside the row's results folder left untouched.

The Globus Compute rows use the stand-in for the cloud service from
tests/test_funcx_boundary.py (mocked: the only stand-in), whose ``forge`` is the hostile
endpoint; the driver's side (recastfit's JSON-only ``ComputeSerializer``) is real.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import psutil
import pytest
from globus_compute_sdk.serialize import DillDataBase64, JSONData

from recastfit.backends import BackendConfig
from recastfit.backends.funcx_backend import FuncxBackend, json_only_serializer
from recastfit.results import FitSettings
from recastfit.runner import RunSummary, run_fits
from tests.test_backends import balloon_for, synth_bkg, synth_tasks
from tests.test_funcx_boundary import ENDPOINT, StandInComputeService

MB = 1 << 20


# -- harness -------------------------------------------------------------------------------------
def _tree_rss() -> int:
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


class _PeakRss:
    """Samples the resident memory of this process tree every 20 ms."""

    def __init__(self) -> None:
        self.base = _tree_rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss())
            time.sleep(0.02)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in sorted(folder.rglob("*"))}


@dataclass
class Row:
    name: str
    run: Callable[[Path, Path], RunSummary]  # (results folder, folder outside it) -> summary
    reason: str  # every failed point's reason contains this


# -- hostile endpoints (forged results) -----------------------------------------------------------
class _Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _funcx_row(forge: Callable[[Path], Callable[[Any], str]]) -> Callable[[Path, Path], RunSummary]:
    def run(results: Path, outside: Path) -> RunSummary:
        service = StandInComputeService(json_only_serializer(), workers=1, forge=forge(outside))
        backend = FuncxBackend(ENDPOINT, workers=1, executor=service)
        config = BackendConfig(name="funcx", endpoint_id=ENDPOINT, batch_size=2, retries=1)
        return run_fits(
            synth_bkg(),
            synth_tasks(2),
            FitSettings(),
            config,
            results / "r.sqlite",
            executor=backend,
            quiet=True,
        )

    return run


def _dill(outside: Path) -> Callable[[Any], str]:
    return lambda args: DillDataBase64().serialize(_Boom(str(outside / "pwned")))


def _code(outside: Path) -> Callable[[Any], str]:
    return lambda args: f"st\nf:import os; os.mkdir({str(outside / 'pwned')!r})\ndef f(): pass"


def _points(args: Any, result: dict) -> str:
    from recastfit.results import PatchTask

    keys = [PatchTask(t["name"], tuple(t["values"]), t["patch"]).key() for t in args[1]]
    return JSONData().serialize({"points": [{"key": k, "result": result} for k in keys], "worker": "x"})


_OK = {"name": "p", "values": [1.0], "status": "ok", "cls_obs": 0.5, "cls_exp": [0.5] * 5, "mu_hat": 1.0}

ROWS = [
    Row("funcx: result pickled with dill (code on unpickle)", _funcx_row(_dill), "RemotePayloadError"),
    Row("funcx: result as source code", _funcx_row(_code), "RemotePayloadError: a result serialised with"),
    Row(
        "funcx: result not valid JSON",
        _funcx_row(lambda o: lambda args: "11\n{'points': [" + "[" * 50),
        "not valid JSON",
    ),
    Row(
        "funcx: result nested 100000 deep",
        _funcx_row(lambda o: lambda args: "11\n" + "[" * 100_000 + "]" * 100_000),
        "not valid JSON",
    ),
    Row(
        "funcx: oversized result (11 MB)",
        _funcx_row(lambda o: lambda args: JSONData().serialize({"points": ["x" * 11_000_000]})),
        "bytes; the limit is 10000000 (RECASTFIT_MAX_RESULT_BYTES)",
    ),
    Row(
        "funcx: results for points never asked",
        _funcx_row(lambda o: lambda args: JSONData().serialize({"points": [{"key": "k"}] * len(args[1])})),
        "bad answer from worker: a point this task did not ask for",
    ),
    Row(
        "funcx: result with unexpected fields",
        _funcx_row(lambda o: lambda args: _points(args, {**_OK, "__class__": "os.system"})),
        "not a hypothesis-test record",
    ),
    Row(
        "funcx: 'ok' result with NaN CLs",
        _funcx_row(lambda o: lambda args: _points(args, {**_OK, "cls_obs": float("nan")})),
        "without finite CLs",
    ),
    Row(
        "funcx: answer that is not a mapping",
        _funcx_row(lambda o: lambda args: JSONData().serialize([1, 2, 3])),
        "a list, not a mapping",
    ),
]


class _SilentService(StandInComputeService):
    """An endpoint that accepts tasks and never answers (lost in a queue, or gone)."""

    def submit(self, fn, *args, **kwargs) -> cf.Future:
        return cf.Future()


def _silent_row(results: Path, outside: Path) -> RunSummary:
    service = _SilentService(json_only_serializer(), workers=1, forge=print)
    backend = FuncxBackend(ENDPOINT, workers=1, executor=service)
    config = BackendConfig(name="funcx", endpoint_id=ENDPOINT, batch_size=2, retries=0)
    with mock.patch.dict(os.environ, {"RECASTFIT_WORKER_STARTUP": "0.5"}):  # budget 0.2 s x 2 + 0.5 s
        return run_fits(
            synth_bkg(),
            synth_tasks(2),
            FitSettings(),
            config,
            results / "r.sqlite",
            executor=backend,
            quiet=True,
            timeout_s=0.2,
        )


ROWS.append(
    Row("funcx: endpoint never answers", _silent_row, "failed after 1 attempt(s): no answer after 3 s")
)


# -- runaway local workers ---------------------------------------------------------------------------
def hang(ref, tasks, settings) -> dict:
    threading.Event().wait()
    return {}


def exit_hard(ref, tasks, settings) -> dict:
    os._exit(3)


def _local_row(
    task_fn: Callable[..., dict], retries: int = 0, **kw: Any
) -> Callable[[Path, Path], RunSummary]:
    def run(results: Path, outside: Path) -> RunSummary:
        config = BackendConfig(batch_size=1, workers=1, retries=retries)
        return run_fits(
            synth_bkg(),
            synth_tasks(1),
            FitSettings(),
            config,
            results / "r.sqlite",
            quiet=True,
            task_fn=task_fn,
            **kw,
        )

    return run


ROWS += [
    Row("local: worker hangs (blocked forever)", _local_row(hang, timeout_s=1), "timeout after 4 s"),
    Row(
        "local: memory balloon to 4 GB",
        _local_row(partial(balloon_for, ("p00",)), timeout_s=5, max_memory_mb=200),
        "worker exceeded 200 MB",
    ),
    Row(
        "local: worker exits hard on every try",
        _local_row(exit_hard, retries=1),
        "failed after 2 attempt(s): task lost: WorkerLost: worker exited with code 3",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_hostile_backend_row(row: Row, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RECASTFIT_WORKER_STARTUP", "3")
    results, outside = tmp_path / "results", tmp_path / "outside"
    results.mkdir()
    outside.mkdir()
    (outside / "marker.txt").write_text("keep me")
    (outside / "results.sqlite").write_text("not yours")
    before = _snapshot(outside)
    t0 = time.monotonic()
    with _PeakRss() as mem:
        summary = row.run(results, outside)
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"{row.name}: {elapsed:.1f} s"
    assert mem.peak - mem.base < 500 * MB, f"{row.name}: {(mem.peak - mem.base) / MB:.0f} MB"
    assert _snapshot(outside) == before  # nothing created, changed or removed outside
    assert summary.done == 0 and summary.failed == summary.total > 0 and summary.exit_code == 0
    for res in summary.results:
        assert res.status == "failed" and row.reason in res.reason, res.reason
    stored = json.loads(json.dumps([r.to_dict() for r in summary.results]))
    assert all(r["cls_obs"] is None for r in stored)
