"""One executor interface for every back end, and the typed ``backend:`` configuration.

A :class:`Backend` is a :class:`concurrent.futures.Executor` (``submit`` returns a
``concurrent.futures.Future``, ``shutdown``, context manager) plus what the fit driver needs:
:meth:`Backend.ship_background` gets the background workspace to the workers once (each back
end its own way) and returns the small :class:`BkgRef` that tasks carry;
:meth:`Backend.submit_batch` runs one batch under a time and memory budget enforced outside
the process that computes it; :meth:`Backend.payload_bytes` measures what a task puts on the wire.

The factory :func:`recastfit.backends.make_backend` lives in the package ``__init__``.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recastfit.backends.worker import BkgRef, bounded_batch
from recastfit.errors import ConfigError
from recastfit.limits import limit

__all__ = ["Backend", "BackendConfig", "BkgRef", "RunDir", "default_rss_cap"]

#: ``globus_compute`` is another name for ``funcx`` (the names themselves are in the schema).
_ALIASES = {"globus_compute": "funcx"}
ENDPOINT_ENV = "GLOBUS_COMPUTE_ENDPOINT"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ProgressFn = Callable[[int], None]


def default_rss_cap() -> int:
    """Resident-memory cap of one fit worker in bytes (limit ``max_worker_rss_bytes``).

    >>> default_rss_cap() >= 64 << 20
    True
    """
    return int(limit("max_worker_rss_bytes"))


@dataclass(frozen=True)
class BackendConfig:
    """Where and how hypothesis tests run: the ``backend:`` block of the workflow config.

    Built from a schema-valid mapping by :meth:`from_dict`; the schema
    (``workflows/schemas/config.schema.yaml``) is the one validator of types and ranges.

    >>> BackendConfig.from_dict({"name": "dask", "batch_size": 8}, file="c.yaml").batch_size
    8
    >>> BackendConfig().batch_size is None  # chosen by the runner from the engine and model
    True
    """

    name: str = "local"
    batch_size: int | None = None
    retries: int = 2
    workers: int | None = None
    endpoint_id: str | None = None
    user_endpoint_config: dict[str, Any] | None = None
    resource_specification: dict[str, Any] | None = None
    amqp_port: int | None = None
    scheduler_address: str | None = None
    parsl_provider: str = "local"
    provider_options: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None

    @classmethod
    def from_dict(cls, section: dict[str, Any] | None, *, file: str = "config.yaml") -> BackendConfig:
        """The typed config from a schema-valid ``backend:`` mapping.

        Raises :class:`ConfigError` only for what the schema cannot express: a ``funcx``
        back end with no endpoint id anywhere (config or ``GLOBUS_COMPUTE_ENDPOINT``), or
        without the Globus Compute SDK installed; unknown Parsl provider options.
        """
        d = dict(section or {})
        d["name"] = _ALIASES.get(d.get("name", "local"), d.get("name", "local"))
        d["provider_options"] = dict(d.get("provider_options") or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:  # the schema refuses these; this guards callers that skipped it
            key = sorted(unknown)[0]
            raise ConfigError(file, f"backend.{key}", f"one of {', '.join(cls.__dataclass_fields__)}", key)
        config = cls(**d)
        if config.name == "funcx":
            config._check_funcx(file)
        if config.name == "parsl" and config.provider_options:
            from recastfit.backends.parsl_providers import check_provider_options

            check_provider_options(config.parsl_provider, config.provider_options, file=file)
        return config

    def _check_funcx(self, file: str) -> None:
        endpoint = self.resolved_endpoint_id()
        if endpoint is None:
            raise ConfigError(
                file, "backend.endpoint_id", f"a Globus Compute endpoint UUID (or set {ENDPOINT_ENV})"
            )
        if not _UUID.match(endpoint):
            raise ConfigError(file, "backend.endpoint_id", f"a UUID in ${ENDPOINT_ENV}", endpoint)
        if importlib.util.find_spec("globus_compute_sdk") is None:
            raise ConfigError(
                file,
                "backend.name",
                "'funcx' with globus-compute-sdk installed (pip install recastfit[funcx])",
            )

    def resolved_endpoint_id(self) -> str | None:
        """The endpoint id from the config, else from ``$GLOBUS_COMPUTE_ENDPOINT``."""
        return self.endpoint_id or os.environ.get(ENDPOINT_ENV) or None


class RunDir:
    """The run folder of a back end: the configured one (kept), or a temporary one removed at the end.

    >>> d = RunDir(None, "recastfit-doc-"); p = d.path; p.is_dir()
    True
    >>> d.close(); p.exists()
    False
    """

    def __init__(self, configured: str | None, prefix: str) -> None:
        self.owned = configured is None
        self.path = Path(tempfile.mkdtemp(prefix=prefix) if configured is None else configured)
        self.path.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


class Backend(cf.Executor):
    """Base of all back ends: a ``concurrent.futures.Executor`` that can ship a background once."""

    name = "base"
    #: How many of the first tasks carry the background themselves (back ends that cannot
    #: broadcast it set this to their worker count, sparing each worker a "missing" round trip).
    eager_ship = 0

    def __init__(self, workers: int, *, rss_cap: int | None = None) -> None:
        self.workers = max(1, int(workers))
        self.rss_cap = rss_cap or default_rss_cap()
        self.background_bytes = 0  # bytes spent shipping the background (all workers)

    @property
    def slots(self) -> int:
        """Tasks that can run at once (the driver keeps about twice this many in flight)."""
        return self.workers

    def start(self) -> None:
        """Start workers/clients (idempotent); called by ``__enter__``."""

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        """Make ``spec`` available to workers; return the reference tasks carry (default: none)."""
        return BkgRef(bkg_digest)

    def payload_bytes(self, fn: Any, *args: Any) -> int:
        """Bytes one task of ``fn(*args)`` puts on the wire (pickle by default)."""
        return len(pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL))

    def submit_batch(
        self, fn: Callable[..., dict], args: tuple, *, budget_s: float, progress: ProgressFn | None = None
    ) -> cf.Future:
        """Run ``fn(*args)`` (a batch) on a worker, killed after ``budget_s`` s or above ``rss_cap``.

        Default: the remote worker runs :func:`~recastfit.backends.worker.bounded_batch`, which
        computes in a child process it supervises, and answers ``{"budget": reason}`` on an
        overrun. ``progress`` (points done inside the batch) is only reported by back ends
        that can stream it.
        """
        return self.submit(bounded_batch, fn, budget_s, self.rss_cap, *args)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:  # pragma: no cover - abstract
        raise NotImplementedError

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop workers and free resources."""

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True, cancel_futures=True)
