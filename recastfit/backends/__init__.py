"""Executors for hypothesis tests: ``local`` (default), ``parsl``, ``dask``, ``funcx`` (Globus Compute).

All share :class:`~recastfit.backends.base.Backend` (a ``concurrent.futures.Executor``)
and are built from a :class:`BackendConfig` by :func:`make_executor`.
"""

from recastfit.backends.base import BACKENDS, Backend, BackendConfig, make_executor
from recastfit.backends.worker import BkgRef, run_batch

__all__ = ["BACKENDS", "Backend", "BackendConfig", "BkgRef", "make_executor", "run_batch"]
