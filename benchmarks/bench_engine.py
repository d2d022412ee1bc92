"""Time plain pyhf against the fast engine in one run, on the same machine and the same points.

    python benchmarks/bench_engine.py                       # stau (59) + demo + scaling 1e2..1e4
    python benchmarks/bench_engine.py --pyhf-points 10      # time pyhf on 10 stau points only
    python benchmarks/bench_engine.py --scaling 100 1000    # shorter scaling run

(a) plain pyhf: numpy backend + scipy, one ``pyhf.infer.hypotest`` per point, one process (as in
the original funcX study); (b) ``recastfit.infer.hypotest_batch(..., FitSettings(engine="fast"))``
on all points at once. The engine's first call (JIT compilation) is reported separately.
Reads ``../shared`` in place (``RECASTFIT_SHARED`` overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyhf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recastfit.infer import hypotest_batch  # noqa: E402
from recastfit.results import FitSettings, PatchTask  # noqa: E402
from tests.stau import stau_grid, stau_patch  # noqa: E402

SHARED = Path(os.environ.get("RECASTFIT_SHARED", ROOT.parent / "shared"))
STAU = SHARED / "data" / "pallets" / "ATLAS-SUSY-2018-04-staus"
XSEC = SHARED / "data" / "xsec"
FAST = FitSettings(engine="fast")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import jax

    backend = f"jax {jax.__version__} ({jax.default_backend()})"
    return f"{cpu}, {os.cpu_count()} cores, {backend}, pyhf {pyhf.__version__}"


def time_pyhf(bkg: dict, tasks: list[PatchTask]) -> float:
    """Seconds for plain pyhf hypotests of ``tasks`` (numpy + scipy, one per point)."""
    pyhf.set_backend("numpy", "scipy")
    ws = pyhf.Workspace(bkg)
    t0 = time.perf_counter()
    for task in tasks:
        model = ws.model(patches=[task.patch])
        pyhf.infer.hypotest(1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True)
    return time.perf_counter() - t0


def time_fast(bkg: dict, tasks: list[PatchTask], repeats: int = 3) -> tuple[float, float, list]:
    """(first call incl. compilation, best steady-state seconds, results) of the fast engine."""
    t0 = time.perf_counter()
    results = hypotest_batch(bkg, tasks, FAST)
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = hypotest_batch(bkg, tasks, FAST)
        best = min(best, time.perf_counter() - t0)
    return first, best, results


def compare(label: str, bkg: dict, tasks: list[PatchTask], n_pyhf: int) -> None:
    first, best, results = time_fast(bkg, tasks)
    sub = tasks[: max(1, min(n_pyhf, len(tasks)))]
    t_pyhf = time_pyhf(bkg, sub)
    pps_pyhf = len(sub) / t_pyhf
    pps_fast = len(tasks) / best
    ok = sum(r.ok for r in results)
    print(f"\n== {label}: {len(tasks)} points ({ok} ok, engines {sorted({r.engine for r in results})})")
    print(
        f"  plain pyhf : {len(sub)} points in {t_pyhf:.2f} s -> {pps_pyhf:.3f} points/s "
        f"({t_pyhf / len(sub):.3f} s/point)"
    )
    print(
        f"  fast engine: {len(tasks)} points in {best:.3f} s -> {pps_fast:.1f} points/s "
        f"(first call incl. compile {first:.2f} s)"
    )
    print(f"  ratio fast/pyhf (points per second): {pps_fast / pps_pyhf:.0f}x")


def stau_tasks(bkg: dict) -> list[PatchTask]:
    return [
        PatchTask(f"stau_{m1:g}_{m2:g}", (m1, m2), stau_patch(bkg, y1, y2))
        for m1, m2, y1, y2 in stau_grid(STAU, XSEC)
    ]


def demo_tasks() -> tuple[dict, list[PatchTask]] | None:
    """The demo analysis made by ``recastfit demo --out DIR``; None (with a message) if unavailable."""
    out = Path(tempfile.mkdtemp(prefix="recastfit-demo-"))
    try:
        proc = subprocess.run(["recastfit", "demo", "--out", str(out)], capture_output=True, text=True)
    except FileNotFoundError:
        print("\n== demo: skipped (no `recastfit` executable on PATH)")
        return None
    if proc.returncode != 0:
        print(
            "\n== demo: skipped (`recastfit demo --out DIR` failed or is absent: "
            f"{proc.stderr.strip()[-200:]})"
        )
        return None
    from recastfit.patches import build_patchset, patchset_tasks
    from recastfit.signals.yields_file import read_yields_file

    bkg_files = sorted(out.rglob("BkgOnly.json"))
    yield_files = sorted(out.rglob("signal_yields.json"))
    if not bkg_files or not yield_files:
        print(f"\n== demo: skipped (no BkgOnly.json / signal_yields.json under {out})")
        return None
    bkg = json.loads(bkg_files[0].read_text())
    params, points = read_yields_file(yield_files[0])
    spec = build_patchset(bkg, points, parameters=params or ["m1", "m2"])
    return bkg, patchset_tasks(spec)


def scaling(bkg: dict, sizes: list[int]) -> None:
    """Time per point for N synthetic signal hypotheses (log-uniform yields) on the stau background."""
    print("\n== scaling: synthetic signals on the stau background (fast engine, after compilation)")
    rng = np.random.default_rng(0)
    for n in sizes:
        ys = np.exp(rng.uniform(np.log(0.1), np.log(50.0), size=(n, 2)))
        tasks = [
            PatchTask(f"s{i}", (float(a), float(b)), stau_patch(bkg, a, b)) for i, (a, b) in enumerate(ys)
        ]
        hypotest_batch(bkg, tasks[: min(n, 1024)], FAST)  # compile the bucket shapes used below
        t0 = time.perf_counter()
        results = hypotest_batch(bkg, tasks, FAST)
        dt = time.perf_counter() - t0
        failed = sum(not r.ok for r in results)
        print(
            f"  N={n:>6}: {dt:8.2f} s total, {dt / n * 1e3:7.3f} ms/point, {n / dt:8.1f} points/s, "
            f"failed {failed}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--pyhf-points", type=int, default=59, help="stau points timed with plain pyhf (default all 59)"
    )
    ap.add_argument("--demo-pyhf-points", type=int, default=20, help="demo points timed with plain pyhf")
    ap.add_argument("--scaling", type=int, nargs="*", default=[100, 1000, 10000])
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args(argv)
    if not STAU.exists():
        print(f"shared data not found at {STAU} (set RECASTFIT_SHARED)")
        return 1
    print(f"machine: {machine()}")
    bkg = json.loads((STAU / "BkgOnly.json").read_text())
    compare("stau grid (ATLAS-SUSY-2018-04)", bkg, stau_tasks(bkg), args.pyhf_points)
    if not args.skip_demo:
        demo = demo_tasks()
        if demo is not None:
            compare("demo grid", demo[0], demo[1], args.demo_pyhf_points)
    if args.scaling:
        scaling(bkg, args.scaling)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
