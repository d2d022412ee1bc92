"""The same 20-point fit through the local pool, a real Parsl HTEX and a real dask LocalCluster.

Also holds the small synthetic workspace and the fault-injecting task functions that
tests/test_runner.py and tests/test_funcx_boundary.py import (spawned workers import them
from here by name).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recastfit.backends import BackendConfig, make_backend
from recastfit.backends.worker import THREAD_ENV_VARS, BkgRef, run_batch
from recastfit.errors import ConfigError
from recastfit.results import FitSettings, HypotestResult, PatchTask
from recastfit.runner import run_fits

_NORM = {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
_MU = {"name": "mu_SIG", "type": "normfactor", "data": None}


def synth_bkg() -> dict:
    """Two channels, five bins, one normsys, staterror per channel: a pyhf fit takes ~0.1 s."""
    return {
        "channels": [
            {
                "name": "SRA",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [20.0, 10.0, 5.0],
                        "modifiers": [
                            _NORM,
                            {"name": "staterror_SRA", "type": "staterror", "data": [2.0, 1.5, 1.0]},
                        ],
                    }
                ],
            },
            {
                "name": "SRB",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [8.0, 3.0],
                        "modifiers": [
                            _NORM,
                            {"name": "staterror_SRB", "type": "staterror", "data": [1.0, 0.8]},
                        ],
                    }
                ],
            },
        ],
        "observations": [{"name": "SRA", "data": [22, 9, 6]}, {"name": "SRB", "data": [7, 4]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu_SIG", "parameters": []}}],
        "version": "1.0.0",
    }


def synth_patch(s: float) -> list[dict]:
    """Add a signal of strength ``s`` as the first sample of both channels."""
    return [
        {
            "op": "add",
            "path": "/channels/0/samples/0",
            "value": {"name": "signal", "data": [s, s / 2, s / 4], "modifiers": [_MU]},
        },
        {
            "op": "add",
            "path": "/channels/1/samples/0",
            "value": {"name": "signal", "data": [s / 3, s / 5], "modifiers": [_MU]},
        },
    ]


def synth_tasks(n: int = 20) -> list[PatchTask]:
    """``n`` points on a 2D grid (m1, m2) whose signal grows along the grid."""
    return [
        PatchTask(f"p{i:02d}", (100.0 + 10 * (i // 5), float(i % 5)), synth_patch(0.5 + 0.6 * i))
        for i in range(n)
    ]


# -- fault injection (importable by spawned workers) ------------------------------------------
def crash_once(sentinel: str, ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> dict:
    """The first task to see no ``sentinel`` file creates it and kills its worker process hard."""
    try:
        fd = os.open(sentinel, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return run_batch(ref, tasks, settings)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(13)


def raise_for(names: tuple[str, ...], ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> dict:
    """Raise (as a lost task would) whenever a batch holds one of ``names``."""
    bad = [t.name for t in tasks if t.name in names]
    if bad:
        raise RuntimeError(f"injected failure for {bad}")
    return run_batch(ref, tasks, settings)


def slow_batch(delay: float, ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> dict:
    """``run_batch`` that also sleeps ``delay`` s per point (so a test can kill mid-run)."""
    import time

    time.sleep(delay * len(tasks))
    return run_batch(ref, tasks, settings)


def hang_for(names: tuple[str, ...], ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> dict:
    """Block forever (as a wedged XLA call would) whenever a batch holds one of ``names``."""
    if any(t.name in names for t in tasks):
        import threading

        threading.Event().wait()
    return run_batch(ref, tasks, settings)


def balloon_for(names: tuple[str, ...], ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> dict:
    """Allocate 20 MB every 20 ms, up to 4 GB, whenever a batch holds one of ``names``."""
    if any(t.name in names for t in tasks):
        import time

        hoard = []
        for _ in range(200):
            hoard.append(bytearray(20 << 20))  # zero-filled: resident at once
            time.sleep(0.02)
    return run_batch(ref, tasks, settings)


def flag_failed(ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> dict:
    """``run_batch`` whose engine flags every point ``failed`` (no exception), as a non-converged fit."""
    out = run_batch(ref, tasks, settings)
    for entry in out["points"]:
        entry["result"] = {**entry["result"], "status": "failed", "reason": "fit did not converge"}
    return out


def reporting_batch(ref: BkgRef, tasks: list[PatchTask], settings: FitSettings, progress=None) -> dict:
    """An engine that reports each point as it finishes (0.4 s apart) through ``progress``."""
    import time

    for _ in tasks:
        time.sleep(0.4)
        if progress is not None:
            progress(1)
    return run_batch(ref, tasks, settings)


def deadline_for(names: tuple[str, ...], ref: BkgRef, tasks: list[PatchTask], settings: FitSettings) -> dict:
    """An engine that reaches its deadline before the points in ``names`` (flagged ``timeout``)."""
    out = run_batch(ref, tasks, settings)
    for task, entry in zip(tasks, out["points"], strict=True):
        if task.name in names:
            entry["result"] = {**entry["result"], "status": "failed", "reason": "timeout"}
    return out


def numbers(results: list[HypotestResult]) -> list[tuple]:
    return [(r.name, r.status, r.cls_obs, tuple(r.cls_exp or ()), r.mu_hat) for r in results]


@functools.cache
def reference_results() -> tuple[HypotestResult, ...]:
    """The 20 points fitted by plain ``hypotest_batch`` in a fresh interpreter with BLAS pinned.

    OpenBLAS picks its kernels from the thread count it starts with, which moves best-fit
    values in the 5th digit, so the reference is made the way workers run: one thread.
    Cached for the whole session (the runner and funcx tests share it).
    """
    code = (
        "import json; from tests.test_backends import synth_bkg, synth_tasks; "
        "from recastfit.infer import hypotest_batch; from recastfit.results import FitSettings; "
        "print(json.dumps([r.to_dict() for r in hypotest_batch(synth_bkg(), synth_tasks(), FitSettings())]))"
    )
    env = {**os.environ, **{k: "1" for k in THREAD_ENV_VARS}}
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    return tuple(HypotestResult.from_dict(d) for d in json.loads(out.stdout))


@pytest.fixture
def reference() -> list[HypotestResult]:
    return list(reference_results())


@pytest.mark.parametrize(
    "name, options",
    [("local", {}), ("parsl", {}), ("dask", {})],
)
def test_same_twenty_points_on_every_backend(name, options, reference, tmp_path: Path) -> None:
    config = BackendConfig.from_dict(
        {"name": name, "batch_size": 3, "workers": 2, "run_dir": str(tmp_path / "run")}
    )
    summary = run_fits(
        synth_bkg(), synth_tasks(), FitSettings(), config, tmp_path / "r.sqlite", cores=2, quiet=True
    )
    assert (summary.done, summary.failed, summary.skipped) == (20, 0, 0)
    assert summary.workers == 2
    assert numbers(summary.results) == numbers(reference)  # bit-identical to plain pyhf, one thread
    assert 0.90 < summary.results[0].cls_obs < 0.91 and summary.results[-1].cls_obs < 0.01
    # a task carries 3 patches and a digest, never the background (~1.4 kB as JSON)
    assert 0 < summary.payload_bytes_per_point < 600
    assert summary.background_bytes > 0


def _backend_schema() -> dict:
    import yaml

    text = (Path(__file__).resolve().parents[1] / "workflows/schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)["properties"]["backend"]


def test_schema_block_covers_every_backend_key_and_refuses_others() -> None:
    import dataclasses

    import jsonschema

    block = _backend_schema()
    assert block["additionalProperties"] is False
    assert set(block["properties"]) == {f.name for f in dataclasses.fields(BackendConfig)}
    check = jsonschema.Draft202012Validator(block)
    good = {
        "name": "funcx",
        "batch_size": 8,
        "endpoint_id": "4b116d3c-1703-4f8f-9f6f-39921e5864df",
        "user_endpoint_config": {"account": "abc", "partition": "short"},
        "resource_specification": {"num_nodes": 2},
        "amqp_port": 443,
    }
    assert not list(check.iter_errors(good))
    bad = [
        ({"bogus": 1}, "additionalProperties"),
        ({"name": "ray"}, "enum"),
        ({"batch_size": 0}, "minimum"),
        ({"batch_size": "4"}, "type"),
        ({"retries": -1}, "minimum"),
        ({"workers": 0}, "minimum"),
        ({"endpoint_id": "not-a-uuid"}, "pattern"),
        ({"amqp_port": 8080}, "enum"),
        ({"parsl_provider": "pbs"}, "enum"),
    ]
    for section, validator in bad:
        assert [e.validator for e in check.iter_errors(section)] == [validator], section


def test_from_dict_types_and_what_the_schema_cannot_say(monkeypatch) -> None:
    cfg = BackendConfig.from_dict({"name": "globus_compute", "endpoint_id": ENDPOINT}, file="my.yaml")
    assert (cfg.name, cfg.endpoint_id, cfg.batch_size, cfg.retries) == ("funcx", ENDPOINT, None, 2)
    assert BackendConfig.from_dict(None, file="my.yaml") == BackendConfig()
    monkeypatch.delenv("GLOBUS_COMPUTE_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match=r"my.yaml: key 'backend.endpoint_id': expected a Globus Compute"):
        BackendConfig.from_dict({"name": "funcx"}, file="my.yaml")
    monkeypatch.setenv("GLOBUS_COMPUTE_ENDPOINT", "nope")
    with pytest.raises(ConfigError, match=r"my.yaml: key 'backend.endpoint_id': expected a UUID"):
        BackendConfig.from_dict({"name": "funcx"}, file="my.yaml")
    monkeypatch.setenv("GLOBUS_COMPUTE_ENDPOINT", ENDPOINT)
    assert BackendConfig.from_dict({"name": "funcx"}, file="my.yaml").resolved_endpoint_id() == ENDPOINT
    with pytest.raises(ConfigError, match=r"my.yaml: key 'backend.provider_options.partitio'"):
        BackendConfig.from_dict(
            {"name": "parsl", "parsl_provider": "slurm", "provider_options": {"partitio": 1}}, file="my.yaml"
        )


ENDPOINT = "4b116d3c-1703-4f8f-9f6f-39921e5864df"


def test_factory_sizes_and_passes_options(monkeypatch) -> None:
    ex = make_backend(BackendConfig(), cores=6)
    assert (ex.name, ex.workers, ex.threads_per_worker, ex.rss_cap) == ("local", 6, 1, 2 << 30)
    ex = make_backend(BackendConfig(workers=2), cores=6, rss_cap=512 << 20)
    assert (ex.workers, ex.threads_per_worker, ex.rss_cap) == (2, 3, 512 << 20)
    monkeypatch.delenv("GLOBUS_COMPUTE_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match="backend.endpoint_id"):
        make_backend(BackendConfig(name="funcx"))
    fx = make_backend(
        BackendConfig(
            name="funcx", endpoint_id=ENDPOINT, user_endpoint_config={"account": "a1"}, amqp_port=443
        )
    )
    assert (fx.name, fx.endpoint_id, fx.workers) == ("funcx", ENDPOINT, 16)
    assert fx.options == {
        "user_endpoint_config": {"account": "a1"},
        "resource_specification": None,
        "amqp_port": 443,
    }


def test_parsl_provider_options_are_checked() -> None:
    from recastfit.backends.parsl_backend import make_provider

    slurm = make_provider("slurm", {"partition": "short", "worker_init": "module load python"})
    assert slurm.partition == "short"
    assert (
        slurm.worker_init.startswith("export OMP_NUM_THREADS='1'")
        and "module load python" in slurm.worker_init
    )
    with pytest.raises(ConfigError, match=r"backend.provider_options.partitio"):
        make_provider("slurm", {"partitio": "short"})
    condor = make_provider("htcondor", {"requirements": 'OpSys == "LINUX"'})
    assert "OPENBLAS_NUM_THREADS='1'" in condor.worker_init


def test_worker_isolates_a_bad_patch_in_its_batch() -> None:
    tasks = synth_tasks(3)
    broken = PatchTask("broken", (0.0, 0.0), [{"op": "add", "path": "/channels/7/samples/0", "value": {}}])
    spec = synth_bkg()
    from recastfit.results import digest

    out = run_batch(BkgRef(digest(spec), spec=spec), [tasks[0], broken, tasks[1]], FitSettings())
    kinds = ["result" if "result" in p else "error" for p in out["points"]]
    assert kinds == ["result", "error", "result"]
    assert out["points"][1]["key"] == broken.key()
    assert out["points"][1]["error"].startswith("JsonPointerException: index '7' is out of bounds")
    assert run_batch(BkgRef("0" * 64), tasks, FitSettings()) == {"missing_background": "0" * 64}


def test_local_workers_pin_blas_threads() -> None:
    from threadpoolctl import threadpool_info

    from recastfit.backends.local import LocalBackend
    from recastfit.results import digest

    spec = synth_bkg()
    with LocalBackend(workers=1, threads_per_worker=1) as ex:
        ref = ex.ship_background(spec, digest(spec))
        out = ex.submit(run_batch, ref, synth_tasks(1), FitSettings()).result()
        assert "points" in out  # the background came with the initializer: no "missing" answer
        pools = ex.submit(threadpool_info).result()
        env = ex.submit(os.getenv, "OPENBLAS_NUM_THREADS").result()
    assert env == "1"
    assert pools and all(p["num_threads"] == 1 for p in pools), pools
