"""The funcx / Globus Compute back end, tested up to the cloud boundary.

The one stand-in: :class:`StandInComputeService` replaces the Globus Compute web service
and a remote endpoint. Everything on our side of it is real: the SDK's own
``ComputeSerializer`` (default strategies, the ones ``globus_compute_sdk.Executor`` uses)
serialises the task function and its arguments, the packed text crosses into a separate
(spawned) process, is deserialised there by a fresh ``ComputeSerializer``, runs, and the
result goes back serialised the same way.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from pathlib import Path

import pytest
from globus_compute_sdk.serialize import ComputeSerializer

from recastfit.backends import BackendConfig
from recastfit.backends.funcx_backend import MAX_REQUEST_BYTES, MAX_RESULT_BYTES, FuncxBackend
from recastfit.backends.worker import BkgRef, run_batch
from recastfit.errors import ConfigError
from recastfit.results import FitSettings, PatchTask, digest
from recastfit.runner import run_fits
from tests.test_backends import numbers, reference, synth_bkg, synth_tasks  # noqa: F401 (fixture)

ENDPOINT = "2b4a5b0e-8f4e-4d0c-9a43-0f7c3f1d9e11"


def endpoint_execute(packed: str) -> str:
    """What an endpoint worker does with a task: unpack, deserialise, run, serialise the result."""
    serde = ComputeSerializer()
    fn, args, kwargs = serde.unpack_and_deserialize(packed)
    return serde.serialize(fn(*args, **kwargs))


class StandInComputeService:
    """Stand-in for the Globus Compute web service + endpoint (the only one in these tests).

    Same surface as ``globus_compute_sdk.Executor`` for what recastfit uses: ``submit``,
    ``shutdown``, ``serializer``, ``batch_size``. Tasks run in persistent spawned worker
    processes, like endpoint workers, so the per-worker background cache is exercised.
    """

    def __init__(self, workers: int = 2) -> None:
        self.serializer = ComputeSerializer()
        self.batch_size = 128
        self.sizes: list[int] = []
        self.result_sizes: list[int] = []
        self.ship_sizes: list[int] = []
        self._pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn, *args, **kwargs) -> cf.Future:
        serde = self.serializer
        args_kw = [serde.serialize(args), serde.serialize(kwargs)]
        size = len(serde.pack_buffers(args_kw))
        self.sizes.append(size)
        if isinstance(args[0], BkgRef) and args[0].spec is not None:
            self.ship_sizes.append(size)
        packed = serde.pack_buffers([serde.serialize(fn), *args_kw])
        out: cf.Future = cf.Future()

        def _back(f: cf.Future) -> None:
            if f.exception() is not None:
                out.set_exception(f.exception())
                return
            self.result_sizes.append(len(f.result()))
            out.set_result(serde.deserialize(f.result()))

        self._pool.submit(endpoint_execute, packed).add_done_callback(_back)
        return out

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def test_task_round_trips_through_compute_serializer() -> None:
    spec, tasks, settings = synth_bkg(), synth_tasks(4), FitSettings()
    ref = BkgRef(digest(spec), spec=spec)
    fn, args, kwargs = ComputeSerializer().check_strategies(run_batch, ref, tasks, settings)
    assert fn is run_batch  # shipped by reference: the endpoint's cache lives in recastfit.backends.worker
    assert args == (ref, tasks, settings) and kwargs == {}
    # the same payload, deserialised and run in a separate process, gives the local answer
    serde = ComputeSerializer()
    packed = serde.pack_buffers([serde.serialize(run_batch), serde.serialize(args), serde.serialize({})])
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = serde.deserialize(pool.submit(endpoint_execute, packed).result())
    local = run_batch(ref, tasks, settings)
    strip = [({**p["result"], "wall_time": 0} if "result" in p else p) for p in remote["points"]]
    assert strip == [{**p["result"], "wall_time": 0} for p in local["points"]]


def test_scan_through_funcx_backend_matches_reference(reference, tmp_path: Path) -> None:  # noqa: F811
    service = StandInComputeService(workers=2)
    backend = FuncxBackend(ENDPOINT, workers=2, executor=service)
    config = BackendConfig(name="funcx", batch_size=4, endpoint_id=ENDPOINT)
    summary = run_fits(
        synth_bkg(), synth_tasks(), FitSettings(), config, tmp_path / "r.sqlite", executor=backend, quiet=True
    )
    assert (summary.done, summary.failed) == (20, 0)
    assert numbers(summary.results) == numbers(reference)
    # tasks without the background are small
    plain = sorted(service.sizes)[: -len(service.ship_sizes)]
    assert max(plain) < min(service.ship_sizes) and max(plain) < 2000
    assert summary.payload_bytes_per_point < 500
    assert max(service.sizes) < MAX_REQUEST_BYTES * 0.8
    assert max(service.result_sizes) < MAX_RESULT_BYTES
    # the first task to each of the 2 workers brought the background; resends only on a miss
    assert len(service.ship_sizes) == 2 + summary.background_sends and summary.background_sends <= 2
    assert len(service.sizes) == 5 + summary.background_sends  # 20 points / 4 per task + resends
    assert summary.background_bytes == sum(service.ship_sizes)


def test_sdk_request_batching_fits_the_10_mb_limit() -> None:
    service = StandInComputeService(workers=1)
    backend = FuncxBackend(ENDPOINT, executor=service)
    spec = {**synth_bkg(), "padding": "x" * 1_000_000}  # ~1 MB serialised
    ref = backend.ship_background(spec, digest(spec))
    assert ref.spec is None and backend.max_payload > 1_000_000
    assert service.batch_size * backend.max_payload <= 0.8 * MAX_REQUEST_BYTES
    assert service.batch_size >= 5
    huge = PatchTask("huge", (0.0,), [{"op": "add", "path": "/x", "value": "y" * 9_000_000}])
    with pytest.raises(ConfigError, match="backend.batch_size"):
        backend.submit(run_batch, ref, [huge], FitSettings())
    service.shutdown()
    too_big = {**synth_bkg(), "padding": "x" * 9_000_000}
    with pytest.raises(ConfigError, match="Globus Compute"):
        FuncxBackend(ENDPOINT, executor=StandInComputeService(workers=1)).ship_background(too_big, "d")
