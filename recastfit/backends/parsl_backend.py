"""Parsl back end: a HighThroughputExecutor on the local machine, Slurm or HTCondor."""

from __future__ import annotations

import concurrent.futures as cf
import json
import shlex
import sys
from typing import Any

from recastfit.backends.base import Backend, RunDir
from recastfit.backends.parsl_providers import check_provider_options, provider_class
from recastfit.backends.worker import BkgRef, thread_env

__all__ = ["ParslBackend", "make_provider"]

_LABEL = "recastfit_htex"


def make_provider(name: str, options: dict[str, Any], threads: int = 1) -> Any:
    """A Parsl provider from ``backend.parsl_provider`` + ``backend.provider_options``.

    ``worker_init`` gets ``export OMP_NUM_THREADS=...`` (and the other BLAS variables)
    prepended so that workers never oversubscribe the cores of a node.
    """
    check_provider_options(name, options)
    cls = provider_class(name)
    opts = dict(options)
    exports = "; ".join(f"export {k}='{v}'" for k, v in thread_env(threads).items())
    user_init = opts.pop("worker_init", "")
    opts["worker_init"] = f"{exports}; {user_init}" if user_init else exports
    if name == "local":
        opts.setdefault("init_blocks", 1)
        opts.setdefault("min_blocks", 1)
        opts.setdefault("max_blocks", 1)
    return cls(**opts)


class ParslBackend(Backend):
    """Tasks go through a Parsl DataFlowKernel to one HighThroughputExecutor.

    The background is written once to ``run_dir/backgrounds/<digest>.json``; a worker
    reads it the first time it needs it (shared file systems) or, when it cannot see the
    file, answers "missing" and is sent the spec once.
    """

    name = "parsl"

    def __init__(
        self,
        workers: int,
        provider: str = "local",
        provider_options: dict[str, Any] | None = None,
        run_dir: str | None = None,
        *,
        rss_cap: int | None = None,
    ) -> None:
        super().__init__(workers, rss_cap=rss_cap)
        self.provider_name = provider
        self.provider_options = dict(provider_options or {})
        self._run_dir_config = run_dir
        self._run_dir: RunDir | None = None
        self._dfk: Any = None
        self._apps: dict[Any, Any] = {}

    def start(self) -> None:
        if self._dfk is not None:
            return
        from parsl.config import Config
        from parsl.dataflow.dflow import DataFlowKernel
        from parsl.executors import HighThroughputExecutor

        self._run_dir = RunDir(self._run_dir_config, "recastfit-parsl-")
        run_dir = self._run_dir.path
        local = self.provider_name == "local"
        provider = make_provider(self.provider_name, self.provider_options)
        htex_opts: dict[str, Any] = {
            "label": _LABEL,
            "provider": provider,
            "max_workers_per_node": self.workers if local else self.provider_options.get("cores_per_node"),
            "cores_per_worker": 1,
            "worker_logdir_root": str(run_dir / "workers"),
        }
        if local:  # workers run with this very interpreter (its venv), not whatever is first on PATH
            from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

            module = f"{shlex.quote(sys.executable)} -m parsl.executors.high_throughput.process_worker_pool"
            launch = DEFAULT_LAUNCH_CMD.replace("process_worker_pool.py", module, 1)
            htex_opts.update(address="127.0.0.1", encrypted=False, launch_cmd=launch)
        config = Config(
            executors=[HighThroughputExecutor(**htex_opts)],
            run_dir=str(run_dir / "runinfo"),
            strategy="none" if local else "simple",
            usage_tracking=0,
            initialize_logging=False,
        )
        self._dfk = DataFlowKernel(config)

    def ship_background(self, spec: dict, bkg_digest: str) -> BkgRef:
        self.start()
        assert self._run_dir is not None
        path = self._run_dir.path / "backgrounds" / f"{bkg_digest}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec))
        tmp.replace(path)
        self.background_bytes = path.stat().st_size
        return BkgRef(bkg_digest, path=str(path))

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        self.start()
        app = self._apps.get(fn)
        if app is None:
            from parsl.app.python import PythonApp

            app = self._apps[fn] = PythonApp(fn, data_flow_kernel=self._dfk, executors=[_LABEL])
        return app(*args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._dfk is not None:
            self._dfk.cleanup()
            self._dfk = None
            self._apps.clear()
        if self._run_dir is not None:
            self._run_dir.close()
            self._run_dir = None
