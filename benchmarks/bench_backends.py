"""Local back end on the ATLAS stau grid: points/s at 1 and 2 workers, scaling, bytes per point.

    python benchmarks/bench_backends.py               # 12 stau points, 1 and 2 workers
    python benchmarks/bench_backends.py --points 59 --workers 1 2 4

Each run starts from an empty result store (so every point is fitted) with the real pyhf
reference engine; the rate includes pool start-up. Scaling efficiency is
rate(n) / (n * rate(1)). "Bytes per point" is what a task carries over the wire divided
by the points in it; it is compared with shipping the patched workspace with every point.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recastfit.backends import BackendConfig  # noqa: E402
from recastfit.results import FitSettings, PatchTask  # noqa: E402
from recastfit.runner import run_fits  # noqa: E402
from tests.stau import reference, stau_grid, stau_patch  # noqa: E402

SHARED = Path(os.environ.get("RECASTFIT_SHARED", ROOT.parent / "shared"))
STAU = SHARED / "data" / "pallets" / "ATLAS-SUSY-2018-04-staus"
XSEC = SHARED / "data" / "xsec"


def stau_tasks(bkg: dict, n: int) -> list[PatchTask]:
    grid = stau_grid(STAU, XSEC)
    step = max(1, len(grid) // n)
    picked = grid[::step][:n]
    return [PatchTask(f"stau_{m1:g}_{m2:g}", (m1, m2), stau_patch(bkg, y1, y2)) for m1, m2, y1, y2 in picked]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=12, help="stau points (spread over the 59)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    if not STAU.exists():
        print(f"shared data not found at {STAU} (set RECASTFIT_SHARED)", file=sys.stderr)
        return 2

    bkg = json.loads((STAU / "BkgOnly.json").read_text())
    tasks = stau_tasks(bkg, args.points)
    ref = reference(STAU)
    naive = sum(len(pickle.dumps((bkg, t.patch), protocol=pickle.HIGHEST_PROTOCOL)) for t in tasks) / len(
        tasks
    )
    print(
        f"stau grid: {len(tasks)} points, batch size {args.batch_size}, "
        f"cores on this machine: {os.cpu_count()}"
    )
    rows = []
    for w in args.workers:
        config = BackendConfig(name="local", workers=w, batch_size=args.batch_size)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            s = run_fits(bkg, tasks, FitSettings(), config, Path(tmp) / "r.sqlite", cores=w, quiet=True)
            wall = time.perf_counter() - t0
        assert s.failed == 0, s.errors
        worst = max(abs(r.cls_obs - ref[tuple(r.values)]["obs"]) for r in s.results)
        fit_s = sum(r.wall_time for r in s.results) / len(s.results)
        rows.append(
            {
                "workers": w,
                "wall_s": wall,
                "points_per_s": len(tasks) / wall,
                "mean_fit_s": fit_s,
                "bytes_per_task": s.payload_bytes_per_task,
                "bytes_per_point": s.payload_bytes_per_point,
                "background_bytes": s.background_bytes,
                "max_abs_dcls_obs_vs_reference": worst,
            }
        )
    base = rows[0]["points_per_s"] / rows[0]["workers"]
    print(
        f"{'workers':>7} {'wall s':>8} {'points/s':>9} {'scaling':>8} "
        f"{'fit s/pt':>9} {'B/point':>8} {'|dCLs|':>8}"
    )
    for r in rows:
        r["scaling_efficiency"] = r["points_per_s"] / (r["workers"] * base)
        print(
            f"{r['workers']:>7} {r['wall_s']:>8.1f} {r['points_per_s']:>9.3f} "
            f"{r['scaling_efficiency']:>8.2f} "
            f"{r['mean_fit_s']:>9.2f} {r['bytes_per_point']:>8.0f} {r['max_abs_dcls_obs_vs_reference']:>8.1e}"
        )
    print(
        f"bytes sent per point: {rows[-1]['bytes_per_point']:.0f} B (patch + digest) vs {naive:.0f} B "
        f"shipping the workspace with each point ({naive / rows[-1]['bytes_per_point']:.0f}x); "
        f"background shipped once per worker: {rows[-1]['background_bytes'] / rows[-1]['workers']:.0f} B"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"points": len(tasks), "naive_bytes_per_point": naive, "runs": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
