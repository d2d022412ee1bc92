"""Globus Compute (formerly funcX) back end: the SDK's ``Executor`` pointed at an endpoint.

Trust: the endpoint may be run by someone else, so nothing it sends is unpickled. Task
arguments go out as JSON (``JSONData``), the endpoint is asked to serialise results as
JSON (``result_serializers=[JSONData]``), and the driver's serializer
(:func:`json_only_serializer`) refuses every result that is not JSON data of at most
``max_result_bytes`` with :class:`RemotePayloadError`, before any deserialiser runs. The
task function travels as source text (``PureSourceTextInspect``: three lines that call
:func:`recastfit.backends.worker.json_batch` on the endpoint, where recastfit must be installed).

Service limits respected here (Globus Compute docs, "Limits"): at most 10 MB per
submission request (the SDK coalesces up to ``batch_size`` tasks into one request, so the
SDK batch size is derived from the largest task payload), 10 MB per result, and about 20
requests per 10 s (the SDK's client-side throttle, left at its default). Only ``submit`` is used.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
from collections.abc import Callable
from typing import Any

from recastfit.backends.base import Backend, ProgressFn
from recastfit.backends.worker import BkgRef, run_batch, task_json
from recastfit.errors import ConfigError, RecastfitError
from recastfit.limits import limit
from recastfit.results import FitSettings

__all__ = [
    "FuncxBackend",
    "MAX_REQUEST_BYTES",
    "RemotePayloadError",
    "json_only_serializer",
    "remote_batch",
]

MAX_REQUEST_BYTES = 10 * 1000 * 1000  # per submission (batches included)
_HEADROOM = 0.8  # keep 20 % of the request for the SDK's own JSON envelope
_SDK_MAX_BATCH = 128


class RemotePayloadError(RecastfitError):
    """A payload from a Globus Compute endpoint that is not plain JSON data; refused, never decoded."""


def remote_batch(ref: dict, tasks: list, settings: dict, budget_s: float, rss_cap: int) -> dict:
    """Runs on the endpoint (shipped as source text): JSON-native arguments in, JSON out."""
    from recastfit.backends.worker import json_batch

    return json_batch(ref, tasks, settings, budget_s, rss_cap)


@functools.cache
def _serializer_class() -> type:
    from globus_compute_sdk.serialize import ComputeSerializer, JSONData, PureSourceTextInspect

    class JsonOnlySerializer(ComputeSerializer):
        """The driver's serializer: JSON data out and back, source text for the task function.

        ``allowed_deserializer_types`` is the SDK's own allow-list (it needs one code type);
        :meth:`deserialize` narrows it to JSON data only, so that a result carrying code is
        refused as well as a pickle.
        """

        def __init__(self, max_result_bytes: int) -> None:
            super().__init__(
                strategy_code=PureSourceTextInspect(),
                strategy_data=JSONData(),
                allowed_deserializer_types=[JSONData, PureSourceTextInspect],
            )
            self.max_result_bytes = int(max_result_bytes)

        def deserialize(self, payload: str) -> Any:
            if not isinstance(payload, str):
                raise RemotePayloadError(f"a result of type {type(payload).__name__}; expected JSON text")
            if len(payload) > self.max_result_bytes:
                raise RemotePayloadError(
                    f"a result of {len(payload)} bytes; the limit is {self.max_result_bytes} "
                    "(RECASTFIT_MAX_RESULT_BYTES)"
                )
            header = payload[: len(JSONData.identifier)]
            if header != JSONData.identifier:
                raise RemotePayloadError(
                    f"a result serialised with strategy {header.strip()!r}; only JSON data "
                    f"({JSONData.identifier.strip()!r}) is accepted from an endpoint"
                )
            try:
                return super().deserialize(payload)
            except (ValueError, RecursionError) as exc:
                raise RemotePayloadError(f"a result that is not valid JSON: {exc}") from None

    return JsonOnlySerializer


def json_only_serializer(max_result_bytes: int | None = None) -> Any:
    """A ``ComputeSerializer`` that sends JSON and accepts only JSON data of bounded size."""
    cap = int(max_result_bytes or limit("max_result_bytes"))
    return _serializer_class()(cap)


def import_executor() -> type:
    """``globus_compute_sdk.Executor`` or a :class:`ConfigError` saying what to install."""
    try:
        from globus_compute_sdk import Executor
    except ImportError as exc:
        raise ConfigError(
            "config.yaml", "backend.name", "'funcx' needs globus-compute-sdk (pip install recastfit[funcx])"
        ) from exc
    return Executor


class FuncxBackend(Backend):
    """Globus Compute ``Executor``; the background reaches each endpoint worker once.

    Tasks carry only the background's digest, except the first ``workers`` tasks, which
    bring the spec along. A worker that still has not cached it answers "missing" and the
    driver resends that batch with the spec. ``client`` is handed to the SDK's Executor
    (tests pass a stand-in for the cloud service there); ``executor`` replaces the Executor
    altogether; its ``serializer`` must be a :func:`json_only_serializer`.
    """

    name = "funcx"

    def __init__(
        self,
        endpoint_id: str,
        workers: int = 16,
        *,
        user_endpoint_config: dict[str, Any] | None = None,
        resource_specification: dict[str, Any] | None = None,
        amqp_port: int | None = None,
        rss_cap: int | None = None,
        client: Any = None,
        executor: Any = None,
    ) -> None:
        super().__init__(workers, rss_cap=rss_cap)
        self.endpoint_id = endpoint_id
        self.options = {
            "user_endpoint_config": user_endpoint_config,
            "resource_specification": resource_specification,
            "amqp_port": amqp_port,
        }
        self.serializer = json_only_serializer() if executor is None else executor.serializer
        if not isinstance(self.serializer, _serializer_class()):
            raise TypeError("the executor must deserialise results with json_only_serializer()")
        self._client = client
        self._executor = executor
        self.max_payload = 0
        self.eager_ship = self.workers  # the first task to each worker brings the background

    def start(self) -> None:
        if self._executor is not None:
            return
        from globus_compute_sdk.serialize import JSONData

        executor_cls = import_executor()
        self._executor = executor_cls(
            endpoint_id=self.endpoint_id,
            client=self._client,
            batch_size=_SDK_MAX_BATCH,
            serializer=self.serializer,
            result_serializers=[JSONData()],
            **self.options,
        )

    @property
    def executor(self) -> Any:
        self.start()
        return self._executor

    def _packed_size(self, *args: Any) -> int:
        serde = self.serializer
        return len(serde.pack_buffers([serde.serialize(args), serde.serialize({})]))

    def payload_bytes(self, fn: Any, *args: Any) -> int:
        return self._packed_size(*task_json(*args))

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        """Nothing is broadcast: workers ask for the spec; check it fits in one request."""
        self.start()
        size = self._packed_size(*task_json(BkgRef(bkg_digest, spec=spec), [], FitSettings()))
        if size > _HEADROOM * MAX_REQUEST_BYTES:
            raise ConfigError(
                "config.yaml",
                "backend.name",
                f"a background workspace under {MAX_REQUEST_BYTES * _HEADROOM / 1e6:.0f} MB serialised for "
                f"Globus Compute (this one is {size / 1e6:.1f} MB); use the parsl or dask back end",
            )
        self.background_bytes = 0  # nothing broadcast: the driver counts the tasks that carry it
        self._fit_batch(size)
        return BkgRef(bkg_digest)

    def _fit_batch(self, size: int) -> None:
        """Shrink the SDK's request batching so that one request stays under 10 MB."""
        self.max_payload = max(self.max_payload, size)
        if hasattr(self._executor, "batch_size"):
            fit = int(_HEADROOM * MAX_REQUEST_BYTES // max(1, self.max_payload))
            self._executor.batch_size = max(1, min(_SDK_MAX_BATCH, fit))

    def submit_batch(
        self, fn: Callable[..., dict], args: tuple, *, budget_s: float, progress: ProgressFn | None = None
    ) -> cf.Future:
        """Send ``args`` (ref, tasks, settings) as JSON to :func:`remote_batch` on the endpoint."""
        if fn is not run_batch:
            raise TypeError("the Globus Compute back end runs only recastfit's own batch function")
        payload = (*task_json(*args), float(budget_s), int(self.rss_cap))
        return self.submit(remote_batch, *payload)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        self.start()
        size = self._packed_size(*args)
        if size > _HEADROOM * MAX_REQUEST_BYTES:
            raise ConfigError(
                "config.yaml",
                "backend.batch_size",
                f"a batch whose payload is under {MAX_REQUEST_BYTES} bytes",
                size,
            )
        if size > self.max_payload:
            self._fit_batch(size)
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)
