"""Executors for hypothesis tests: ``local`` (default), ``parsl``, ``dask``, ``funcx`` (Globus Compute).

All share :class:`~recastfit.backends.base.Backend` (a ``concurrent.futures.Executor``)
and are built from a :class:`BackendConfig` by :func:`make_backend`. See docs/backends.md
for set-up and the trust model of each.
"""

from __future__ import annotations

from recastfit.backends.base import Backend, BackendConfig
from recastfit.backends.supervisor import BudgetExceeded, WorkerLost
from recastfit.backends.worker import BkgRef, run_batch
from recastfit.errors import ConfigError

__all__ = [
    "Backend",
    "BackendConfig",
    "BkgRef",
    "BudgetExceeded",
    "WorkerLost",
    "make_backend",
    "run_batch",
]


def make_backend(config: BackendConfig, cores: int = 1, *, rss_cap: int | None = None) -> Backend:
    """The back end named in ``config``; ``cores`` (Snakemake's ``--cores``) sizes local pools.

    ``rss_cap`` (bytes, default limit ``max_worker_rss_bytes``, 2 GiB) is the resident memory
    a worker may reach before the watchdog kills it (the config's ``fit.max_memory_mb``).

    >>> b = make_backend(BackendConfig(workers=2), cores=4)
    >>> (b.name, b.workers, b.threads_per_worker)
    ('local', 2, 2)
    """
    cores = max(1, int(cores))
    workers = config.workers or cores
    if config.name == "local":
        from recastfit.backends.local import LocalBackend

        return LocalBackend(workers, threads_per_worker=max(1, cores // workers), rss_cap=rss_cap)
    if config.name == "parsl":
        from recastfit.backends.parsl_backend import ParslBackend

        return ParslBackend(
            workers,
            provider=config.parsl_provider,
            provider_options=config.provider_options,
            run_dir=config.run_dir,
            rss_cap=rss_cap,
        )
    if config.name == "dask":
        from recastfit.backends.dask_backend import DaskBackend

        return DaskBackend(
            workers, scheduler_address=config.scheduler_address, run_dir=config.run_dir, rss_cap=rss_cap
        )
    from recastfit.backends.funcx_backend import FuncxBackend

    endpoint = config.resolved_endpoint_id()
    if not endpoint:
        raise ConfigError(
            "config.yaml",
            "backend.endpoint_id",
            "a Globus Compute endpoint UUID (or set GLOBUS_COMPUTE_ENDPOINT)",
        )
    return FuncxBackend(
        endpoint,
        workers=config.workers or 16,
        user_endpoint_config=config.user_endpoint_config,
        resource_specification=config.resource_specification,
        amqp_port=config.amqp_port,
        rss_cap=rss_cap,
    )
