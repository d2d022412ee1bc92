"""Compile once: a second process on the stau structure neither traces nor compiles its programs.

The first process exports the traced programs (``recastfit.infer.fast.export_cache``) and fills
JAX's persistent compilation cache; the second loads both. A corrupt or foreign cache file is
ignored (the program is traced again), never trusted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT, STAU_DIR, need_shared

pytest.importorskip("jax")

# two points of one structure, in the order given: the second process starts with the other
# point, so the cache key must not depend on the point that made the structure
_RUN = textwrap.dedent(
    """
    import json, sys, time
    t_start = time.perf_counter()
    sys.path.insert(0, {root!r})
    import jax.monitoring
    events = {{}}
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: events.__setitem__(name, events.get(name, 0.0) + secs)
    )
    import recastfit.infer.fast.hypotest
    from recastfit.infer import hypotest_batch
    from recastfit.infer.fast import export_cache
    from recastfit.infer.fast.jaxsetup import configure
    from recastfit.results import FitSettings, PatchTask
    from tests.stau import stau_patch

    bkg = json.load(open({bkg!r}))
    out = {{"imports": time.perf_counter() - t_start, "cls": {{}}}}
    for i, (y1, y2) in enumerate({points!r}):
        task = PatchTask("stau", (y1, y2), stau_patch(bkg, y1, y2))
        t0 = time.perf_counter()
        (res,) = hypotest_batch(bkg, [task], FitSettings(engine="fast"))
        out.setdefault("first", time.perf_counter() - t0)
        out["cls"][f"{{y1}},{{y2}}"] = [res.status, res.cls_obs] + res.cls_exp
    t0 = time.perf_counter()
    hypotest_batch(bkg, [task], FitSettings(engine="fast"))
    out.update(warm=time.perf_counter() - t0, cache=str(configure()), stats=export_cache.STATS)
    out["trace"] = sum(v for k, v in events.items() if k.endswith("jaxpr_trace_duration"))
    print(json.dumps(out))
    """
)
_POINTS = [(3.0, 1.5), (0.4, 7.0)]


def _run(env: dict, points) -> dict:
    code = _RUN.format(root=str(ROOT), bkg=str(STAU_DIR / "BkgOnly.json"), points=points)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_exported_and_compiled_programs(tmp_path):
    need_shared(STAU_DIR)
    pytest.importorskip("flatbuffers", reason="jax.export serialization needs the flatbuffers package")
    env = {**os.environ, "RECASTFIT_JAX_CACHE": str(tmp_path / "jax")}
    cold = _run(env, _POINTS)
    assert cold["cache"] == str(tmp_path / "jax")
    exported = {p.name.split("-")[0] for p in (tmp_path / "jax" / "exported").iterdir()}
    assert {"bkg", "points"} <= exported, exported  # the mu=0 fit and the Gauss-Newton pass at least
    n = cold["stats"]["exported"]
    assert n >= 2 and cold["stats"] == {"loaded": 0, "exported": n, "rejected": 0, "unexportable": 0}
    assert len(list((tmp_path / "jax").iterdir())) > 1, "nothing written to the XLA compilation cache"
    hot = _run(env, _POINTS[::-1])
    # nothing traced: both programs loaded, and no file rejected or rewritten
    assert hot["stats"] == {"loaded": n, "exported": 0, "rejected": 0, "unexportable": 0}
    assert hot["cls"] == cold["cls"]  # identical numbers, both points
    assert all(v[0] == "ok" for v in hot["cls"].values())
    compile_cold = cold["first"] - cold["warm"]
    compile_hot = hot["first"] - hot["warm"]
    print(
        f"stau structure, first call: {cold['first']:.1f} s cold cache, {hot['first']:.1f} s warm cache "
        f"(imports before it {hot['imports']:.1f} s; tracing {cold['trace']:.2f} s -> {hot['trace']:.2f} s); "
        f"load {os.getloadavg()}"
    )
    assert hot["trace"] < 0.2 * cold["trace"], (cold["trace"], hot["trace"])  # only the thin call wrappers
    # ~1 s on an idle 2-core machine; the bound here leaves room for a loaded one (4x slower at load 9)
    assert compile_hot < 0.25 * compile_cold and compile_hot < 8.0, (compile_cold, compile_hot)


def _program(tmp_path):
    import jax.numpy as jnp

    from recastfit.infer.fast.export_cache import Programs

    class Owner:
        def __init__(self):
            self.scale = 3.0
            self.arrays = {"w": jnp.arange(4.0)}
            self.program = Programs(self, folder=tmp_path).jit("f", self.f)

        def f(self, arr, x, k):
            return (arr["w"] * x + k) * self.scale

    return Owner()


def test_corrupt_or_foreign_cache_files_are_ignored(tmp_path):
    pytest.importorskip("flatbuffers", reason="jax.export serialization needs the flatbuffers package")
    from recastfit.infer.fast.export_cache import MAGIC, STATS, SUBDIR

    want = (np.arange(4.0) * 2.0 + 1) * 3.0
    first = _program(tmp_path)
    before = dict(STATS)
    np.testing.assert_array_equal(first.program(first.arrays, np.full(4, 2.0), 1), want)
    (path,) = (tmp_path / SUBDIR).iterdir()
    good = path.read_bytes()
    assert good.startswith(MAGIC) and STATS["exported"] == before["exported"] + 1
    # a foreign file: a valid export of another program, stored under this program's name
    other = _program(tmp_path / "other")
    other.program(other.arrays, np.full(4, 2.0), 1.5)  # k a float: another program, another key
    (foreign,) = (tmp_path / "other" / SUBDIR).iterdir()
    assert foreign.name != path.name
    bad = {
        "truncated": good[: len(good) // 2],
        "flipped byte": good[:-100] + bytes([good[-100] ^ 0xFF]) + good[-99:],
        "garbage": os.urandom(5000),
        "empty": b"",
        "magic only": MAGIC,
        "foreign": foreign.read_bytes(),
        "fifo": None,  # would block a plain open()
        "link to /dev/zero": None,  # endless
    }
    for why, data in bad.items():
        path.unlink()
        if why == "fifo":
            os.mkfifo(path)
        elif why.startswith("link"):
            path.symlink_to("/dev/zero")
        else:
            path.write_bytes(data)
        before = dict(STATS)
        owner = _program(tmp_path)
        got = owner.program(owner.arrays, np.full(4, 2.0), 1)
        np.testing.assert_array_equal(got, want, err_msg=why)
        assert STATS["rejected"] == before["rejected"] + 1, why
        assert STATS["exported"] == before["exported"] + 1, why  # traced again ...
        # ... and rewritten: the next process loads it instead of tracing
        before = dict(STATS)
        owner = _program(tmp_path)
        np.testing.assert_array_equal(owner.program(owner.arrays, np.full(4, 2.0), 1), want)
        assert STATS["loaded"] == before["loaded"] + 1 and STATS["exported"] == before["exported"], why


def test_key_follows_state_and_shapes_not_values():
    import jax.numpy as jnp

    from recastfit.infer.fast.export_cache import fingerprint

    class Owner:
        def __init__(self, mu, values):
            self.mu, self.arrays = mu, {"w": values}

    base = fingerprint(vars(Owner(1.0, jnp.zeros(3))))
    assert fingerprint(vars(Owner(1.0, jnp.ones(3)))) == base
    assert fingerprint(vars(Owner(2.0, jnp.zeros(3)))) != base
    assert fingerprint(vars(Owner(1.0, jnp.zeros(4)))) != base
    assert fingerprint(vars(Owner(1.0, jnp.zeros(3, jnp.int32)))) != base


def test_cache_can_be_switched_off(tmp_path):
    from recastfit.infer.fast.export_cache import CachedProgram, Programs
    from recastfit.infer.fast.jaxsetup import cache_dir

    assert cache_dir({"RECASTFIT_JAX_CACHE": "off"}) is None
    assert cache_dir({"RECASTFIT_JAX_CACHE": "OFF"}) is None
    default = cache_dir({})
    assert default is not None and default.parts[-2:] == ("recastfit", "jax")
    assert not isinstance(Programs(object(), folder=None).jit("f", lambda x: x), CachedProgram)
