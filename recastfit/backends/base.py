"""One executor interface for every back end, its configuration, and the factory.

A :class:`Backend` is a :class:`concurrent.futures.Executor` (``submit`` returns a
``concurrent.futures.Future``, ``shutdown``, context manager) plus two things the fit
driver needs: :meth:`Backend.ship_background`, which gets the background workspace to the
workers once (each back end its own way) and returns the small :class:`BkgRef` that tasks
carry, and :meth:`Backend.payload_bytes`, the bytes one task puts on the wire.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import pickle
from dataclasses import dataclass, field, fields
from typing import Any

from recastfit.backends.worker import BkgRef
from recastfit.errors import ConfigError

__all__ = ["BACKENDS", "Backend", "BackendConfig", "BkgRef", "make_executor"]

#: Accepted back-end names; aliases map to the canonical name.
BACKENDS = ("local", "parsl", "dask", "funcx")
_ALIASES = {"globus_compute": "funcx", "globus-compute": "funcx", "process": "local"}
PARSL_PROVIDERS = ("local", "slurm", "htcondor")
ENDPOINT_ENV = ("RECASTFIT_FUNCX_ENDPOINT", "GLOBUS_COMPUTE_ENDPOINT")


@dataclass
class BackendConfig:
    """Where and how hypothesis tests run (the ``backend:`` block of the workflow config).

    >>> BackendConfig.from_dict({"name": "dask", "batch_size": 8}).batch_size
    8
    """

    name: str = "local"
    batch_size: int = 4
    retries: int = 2
    workers: int | None = None
    endpoint_id: str | None = None
    scheduler_address: str | None = None
    parsl_provider: str = "local"
    provider_options: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, file: str = "<BackendConfig>", prefix: str = "backend") -> None:
        """Raise :class:`ConfigError` naming the first bad key."""
        name = _ALIASES.get(self.name, self.name) if isinstance(self.name, str) else self.name
        if name not in BACKENDS:
            raise ConfigError(file, f"{prefix}.name", f"one of {', '.join(BACKENDS)}", self.name)
        self.name = name
        for key, lo in (("batch_size", 1), ("retries", 0)):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ConfigError(file, f"{prefix}.{key}", f"an integer >= {lo}", val)
        if self.workers is not None and (
            not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1
        ):
            raise ConfigError(file, f"{prefix}.workers", "a positive integer or null", self.workers)
        for key in ("endpoint_id", "scheduler_address", "run_dir"):
            val = getattr(self, key)
            if val is not None and not isinstance(val, str):
                raise ConfigError(file, f"{prefix}.{key}", "a string or null", val)
        if self.parsl_provider not in PARSL_PROVIDERS:
            raise ConfigError(
                file, f"{prefix}.parsl_provider", f"one of {', '.join(PARSL_PROVIDERS)}", self.parsl_provider
            )
        if not isinstance(self.provider_options, dict):
            raise ConfigError(file, f"{prefix}.provider_options", "a mapping", self.provider_options)

    @classmethod
    def from_dict(
        cls, d: dict[str, Any] | None, file: str = "config.yaml", prefix: str = "backend"
    ) -> BackendConfig:
        """Build from a config mapping; unknown keys and bad types raise :class:`ConfigError`."""
        if d is not None and not isinstance(d, dict):
            raise ConfigError(file, prefix, "a mapping", d)
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ConfigError(file, f"{prefix}.{key}", f"one of the keys {', '.join(sorted(known))}", key)
        obj = cls.__new__(cls)
        for f in fields(cls):
            default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
            setattr(obj, f.name, d.get(f.name, default))
        obj.validate(file, prefix)
        return obj

    def resolved_endpoint_id(self) -> str | None:
        """Endpoint id: config, then env ``RECASTFIT_FUNCX_ENDPOINT`` or ``GLOBUS_COMPUTE_ENDPOINT``."""
        if self.endpoint_id:
            return self.endpoint_id
        for var in ENDPOINT_ENV:
            if os.environ.get(var):
                return os.environ[var]
        return None


class Backend(cf.Executor):
    """Base of all back ends: a ``concurrent.futures.Executor`` that can ship a background once."""

    name = "base"
    #: How many of the first tasks carry the background themselves (back ends that cannot
    #: broadcast it set this to their worker count, sparing each worker a "missing" round trip).
    eager_ship = 0

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
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

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:  # pragma: no cover - abstract
        raise NotImplementedError

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop workers and free resources."""

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True, cancel_futures=True)


def make_executor(config: BackendConfig, cores: int = 1) -> Backend:
    """The back end named in ``config``; ``cores`` (Snakemake's ``--cores``) sizes local pools."""
    cores = max(1, int(cores))
    workers = config.workers or cores
    if config.name == "local":
        from recastfit.backends.local import LocalBackend

        return LocalBackend(workers=workers, threads_per_worker=max(1, cores // workers))
    if config.name == "parsl":
        from recastfit.backends.parsl_backend import ParslBackend

        return ParslBackend(
            workers=workers,
            provider=config.parsl_provider,
            provider_options=config.provider_options,
            run_dir=config.run_dir,
        )
    if config.name == "dask":
        from recastfit.backends.dask_backend import DaskBackend

        return DaskBackend(
            workers=workers, scheduler_address=config.scheduler_address, run_dir=config.run_dir
        )
    from recastfit.backends.funcx_backend import FuncxBackend

    endpoint = config.resolved_endpoint_id()
    if not endpoint:
        raise ConfigError(
            "config.yaml",
            "backend.endpoint_id",
            f"a Globus Compute endpoint id (or set {' / '.join(ENDPOINT_ENV)})",
        )
    return FuncxBackend(endpoint_id=endpoint, workers=config.workers or 16)
