"""funcX / Globus Compute back end: the SDK's ``Executor`` pointed at an endpoint.

Service limits respected here (Globus Compute docs, "Limits"): at most 10 MB per
submission request (the SDK coalesces up to ``batch_size`` tasks into one request, so the
SDK batch size is derived from the largest task payload), 10 MB per result, and about 20
requests per 10 s (the SDK's client-side ``api_burst_limit``/``api_burst_window_s`` throttle,
left at 4 per 16 s). ``Executor.map`` is not implemented by the SDK: only ``submit`` is used.
The ``funcx`` 2.x package is a shim over ``globus_compute_sdk``; it is accepted when the
latter is absent.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from recastfit.backends.base import Backend
from recastfit.backends.worker import BkgRef
from recastfit.errors import ConfigError

__all__ = ["FuncxBackend", "MAX_REQUEST_BYTES", "MAX_RESULT_BYTES", "import_sdk", "task_payload_bytes"]

MAX_REQUEST_BYTES = 10 * 1000 * 1000  # per submission (batches included)
MAX_RESULT_BYTES = 10 * 1000 * 1000  # per task result
_HEADROOM = 0.8  # keep 20 % of the request for the SDK's own JSON envelope
_SDK_MAX_BATCH = 128


def import_sdk() -> tuple[type, Any]:
    """``(Executor class, ComputeSerializer class)`` from ``globus_compute_sdk`` or the old ``funcx``."""
    try:
        from globus_compute_sdk import Executor
        from globus_compute_sdk.serialize import ComputeSerializer

        return Executor, ComputeSerializer
    except ImportError:
        pass
    try:  # funcx >= 2: a shim that re-exports the Globus Compute SDK
        from funcx import FuncXExecutor as Executor  # type: ignore[import-not-found]
        from funcx.serialize import FuncXSerializer as ComputeSerializer  # type: ignore[import-not-found]

        return Executor, ComputeSerializer
    except ImportError as exc:
        raise ConfigError(
            "config.yaml", "backend.name", "'funcx' needs globus-compute-sdk (pip install recastfit[funcx])"
        ) from exc


def task_payload_bytes(serializer: Any, *args: Any, **kwargs: Any) -> int:
    """Bytes of one task's arguments as the SDK sends them (the function is registered once)."""
    return len(serializer.pack_buffers([serializer.serialize(args), serializer.serialize(kwargs)]))


class FuncxBackend(Backend):
    """Globus Compute ``Executor``; the background reaches each endpoint worker once.

    Tasks carry only the background's digest, except the first ``workers`` tasks, which
    bring the spec along. A worker that still has not cached it answers "missing" and the
    driver resends that batch with the spec.
    ``executor`` may be any object with the SDK Executor's ``submit``/``shutdown`` and a
    ``serializer`` (tests pass a stand-in for the cloud service here).
    """

    name = "funcx"

    def __init__(self, endpoint_id: str, workers: int = 16, executor: Any = None) -> None:
        super().__init__(workers)
        self.endpoint_id = endpoint_id
        self._executor = executor
        self._serializer: Any = getattr(executor, "serializer", None)
        self.max_payload = 0
        self.eager_ship = self.workers  # the first task to each worker brings the background

    def start(self) -> None:
        if self._executor is None:
            executor_cls, _ = import_sdk()
            self._executor = executor_cls(endpoint_id=self.endpoint_id, batch_size=_SDK_MAX_BATCH)
        if self._serializer is None:
            self._serializer = getattr(self._executor, "serializer", None)
        if self._serializer is None:
            _, serializer_cls = import_sdk()
            self._serializer = serializer_cls()

    def payload_bytes(self, fn: Any, *args: Any) -> int:
        self.start()
        return task_payload_bytes(self._serializer, *args)

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        """Nothing is broadcast: workers ask for the spec; check it fits in one request."""
        self.start()
        size = task_payload_bytes(self._serializer, BkgRef(bkg_digest, spec=spec))
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

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        self.start()
        size = task_payload_bytes(self._serializer, *args, **kwargs)
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
