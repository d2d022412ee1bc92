"""The Globus Compute back end, tested up to the cloud boundary: JSON only, both ways.

The one stand-in: :class:`StandInComputeService` replaces the Globus Compute web service
and a remote endpoint (it is mocked; nothing else is). Everything on our side of it is
real: the SDK's own ``ComputeSerializer`` machinery (recastfit's JSON-only subclass on the
driver, a plain ``ComputeSerializer`` on the endpoint, as an endpoint worker has), the
packed text crossing into a separate (spawned) process, the result serialised there with
the ``result_serializers`` the driver asked for, and deserialised by the driver's serializer.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from globus_compute_sdk.errors import DeserializationError
from globus_compute_sdk.serialize import (
    ComputeSerializer,
    DillDataBase64,
    JSONData,
    PureSourceTextInspect,
)

from recastfit.backends import BackendConfig
from recastfit.backends.funcx_backend import (
    MAX_REQUEST_BYTES,
    FuncxBackend,
    RemotePayloadError,
    json_only_serializer,
    remote_batch,
)
from recastfit.backends.worker import BkgRef, task_json
from recastfit.errors import ConfigError
from recastfit.results import FitSettings, PatchTask, digest
from recastfit.runner import run_fits
from tests.test_backends import numbers, reference, synth_bkg, synth_tasks  # noqa: F401 (fixture)

ENDPOINT = "2b4a5b0e-8f4e-4d0c-9a43-0f7c3f1d9e11"
JSON_RESULTS = ["globus_compute_sdk.serialize.JSONData"]


def endpoint_execute(packed: str, result_serializers: list[str]) -> str:
    """What an endpoint worker does with a task: unpack, deserialise, run, serialise the result."""
    serde = ComputeSerializer()
    fn, args, kwargs = serde.unpack_and_deserialize(packed)
    return ComputeSerializer.serialize_from_list(fn(*args, **kwargs), result_serializers)


class StandInComputeService:
    """Stand-in for the Globus Compute web service + endpoint (mocked; the only stand-in here).

    Same surface as ``globus_compute_sdk.Executor`` for what recastfit uses (``submit``,
    ``shutdown``, ``batch_size``), packing tasks with the driver's serializer and setting
    each future from ``serializer.deserialize(result)``, as the SDK's result watcher does.
    ``forge`` replaces what the endpoint sends back (a hostile endpoint).
    """

    def __init__(self, serializer: Any, workers: int = 2, forge: Any = None) -> None:
        self.serializer = serializer
        self.batch_size = 128
        self.sizes: list[int] = []
        self.result_sizes: list[int] = []
        self.ship_sizes: list[int] = []
        self.packed: list[str] = []
        self.forge = forge
        if forge is None:
            self._pool: cf.Executor = cf.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn")
            )
        else:
            self._pool = cf.ThreadPoolExecutor(workers)

    def submit(self, fn, *args, **kwargs) -> cf.Future:
        serde = self.serializer
        args_kw = [serde.serialize(args), serde.serialize(kwargs)]
        size = len(serde.pack_buffers(args_kw))
        self.sizes.append(size)
        if isinstance(args[0], dict) and args[0].get("spec") is not None:
            self.ship_sizes.append(size)
        packed = serde.pack_buffers([serde.serialize(fn), *args_kw])
        self.packed.append(packed)
        out: cf.Future = cf.Future()

        def _back(f: cf.Future) -> None:
            try:
                payload = f.result()
                self.result_sizes.append(len(payload))
                out.set_result(serde.deserialize(payload))
            except BaseException as exc:  # noqa: BLE001 - becomes the task's exception
                out.set_exception(exc)

        if self.forge is None:
            self._pool.submit(endpoint_execute, packed, JSON_RESULTS).add_done_callback(_back)
        else:
            self._pool.submit(self.forge, args).add_done_callback(_back)
        return out

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def test_json_accepted_dill_and_code_refused_by_the_real_serializer(tmp_path: Path) -> None:
    serde = json_only_serializer()
    assert isinstance(serde, ComputeSerializer)
    assert serde.allowed_deserializer_types == {JSONData, PureSourceTextInspect}
    value = {"points": [{"key": "k", "error": "x"}], "worker": "h:1"}
    assert serde.deserialize(JSONData().serialize(value)) == value
    marker = tmp_path / "pwned"
    dill_payload = DillDataBase64().serialize(_Boom(str(marker)))
    with pytest.raises(RemotePayloadError, match=r"strategy '00'; only JSON data \('11'\)"):
        serde.deserialize(dill_payload)
    code_payload = f"st\nf:import os; os.mkdir({str(marker)!r})\ndef f(): pass"
    with pytest.raises(RemotePayloadError, match="strategy 'st'"):
        serde.deserialize(code_payload)
    assert not marker.exists()
    # the SDK's own allow-list, as configured here, refuses the pickle too (second line)
    with pytest.raises(DeserializationError, match="DillDataBase64 disabled"):
        ComputeSerializer.deserialize(serde, dill_payload)
    assert not marker.exists()


class _Boom:
    """Unpickling this creates a folder: what a crafted result would do to the driver."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_tasks_leave_as_json_and_the_function_as_source() -> None:
    serde = json_only_serializer()
    spec, tasks = synth_bkg(), synth_tasks(2)
    args = (*task_json(BkgRef(digest(spec)), tasks, FitSettings()), 10.0, 1 << 30)
    fn_buf, args_buf, _ = serde.unpack_buffers(
        serde.pack_buffers([serde.serialize(remote_batch), serde.serialize(args), serde.serialize({})])
    )
    assert fn_buf.startswith("st\nremote_batch:def remote_batch(")
    assert args_buf.startswith("11\n")  # JSON data, nothing pickled
    with pytest.raises(Exception, match="JSONData failed"):
        serde.serialize((BkgRef("d"),))  # a dataclass is not JSON: refused at the driver


def test_scan_through_funcx_backend_matches_reference(reference, tmp_path: Path) -> None:  # noqa: F811
    service = StandInComputeService(json_only_serializer(), workers=2)
    backend = FuncxBackend(ENDPOINT, workers=2, executor=service)
    config = BackendConfig(name="funcx", batch_size=4, endpoint_id=ENDPOINT)
    summary = run_fits(
        synth_bkg(), synth_tasks(), FitSettings(), config, tmp_path / "r.sqlite", executor=backend, quiet=True
    )
    assert (summary.done, summary.failed) == (20, 0)
    assert numbers(summary.results) == numbers(reference)
    assert all(p.split("\n", 2)[1].startswith("st") for p in service.packed)  # code as source text
    # tasks without the background are small
    plain = sorted(service.sizes)[: -len(service.ship_sizes)]
    assert max(plain) < min(service.ship_sizes) and max(plain) < 2500
    assert summary.payload_bytes_per_point < 600
    assert max(service.sizes) < MAX_REQUEST_BYTES * 0.8
    # the first task to each of the 2 workers brought the background; resends only on a miss
    assert len(service.ship_sizes) == 2 + summary.background_sends and summary.background_sends <= 2
    assert len(service.sizes) == 5 + summary.background_sends  # 20 points / 4 per task + resends
    # the driver counts the task's arguments; the budget and memory cap add a few bytes each
    assert 0 <= sum(service.ship_sizes) - summary.background_bytes <= 2 * 30


def test_executor_options_reach_the_sdk_executor() -> None:
    """The real ``globus_compute_sdk.Executor``, built with a stand-in for the web-service client."""

    class StandInClient:  # the cloud service's client (mocked): only holds the serializer
        fx_serializer = None

    backend = FuncxBackend(
        ENDPOINT,
        user_endpoint_config={"account": "a1", "partition": "short"},
        resource_specification={"num_nodes": 2},
        amqp_port=443,
        client=StandInClient(),
    )
    ex = backend.executor
    try:
        assert type(ex).__module__.startswith("globus_compute_sdk")
        assert ex.user_endpoint_config == {"account": "a1", "partition": "short"}
        assert ex.resource_specification == {"num_nodes": 2}
        assert ex.amqp_port == 443 and str(ex.endpoint_id) == ENDPOINT
        assert ex.serializer is backend.serializer  # results are deserialised by the JSON-only one
        assert [type(s) for s in ex.result_serializers] == [JSONData]
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def test_sdk_request_batching_fits_the_10_mb_limit() -> None:
    service = StandInComputeService(json_only_serializer(), workers=1, forge=lambda args: "11\n{}")
    backend = FuncxBackend(ENDPOINT, workers=1, executor=service)
    spec = {**synth_bkg(), "padding": "x" * 1_000_000}  # ~1 MB serialised
    ref = backend.ship_background(spec, digest(spec))
    assert ref.spec is None and backend.max_payload > 1_000_000
    assert service.batch_size * backend.max_payload <= 0.8 * MAX_REQUEST_BYTES
    assert service.batch_size >= 5
    huge = PatchTask("huge", (0.0,), [{"op": "add", "path": "/x", "value": "y" * 9_000_000}])
    from recastfit.backends.worker import run_batch

    with pytest.raises(ConfigError, match="backend.batch_size"):
        backend.submit_batch(run_batch, (ref, [huge], FitSettings()), budget_s=10)
    service.shutdown()
    too_big = {**synth_bkg(), "padding": "x" * 9_000_000}
    with pytest.raises(ConfigError, match="Globus Compute"):
        forged = StandInComputeService(json_only_serializer(), workers=1, forge=lambda args: "")
        FuncxBackend(ENDPOINT, workers=1, executor=forged).ship_background(too_big, "d")
    with pytest.raises(TypeError, match="json_only_serializer"):
        FuncxBackend(ENDPOINT, executor=StandInComputeService(ComputeSerializer(), forge=print))
