"""A pMSSM-size scan end to end through ``recastfit scan`` (the runner, the store), against plain pyhf.

    python benchmarks/bench_scan.py --rows 10000            # 10^4 rows (a shared 2-core machine)
    python benchmarks/bench_scan.py                         # 10^5 rows (the issue-13 target)
    python benchmarks/bench_scan.py --rows 10000 --kill-at 0.5   # also: kill -9 half-way, resume

Rows: yields log-uniform in 0.1-50 events in ``SR1cut_cuts`` and ``SR2cut_cuts`` of the stau
likelihood (``../shared/data/pallets/ATLAS-SUSY-2018-04-staus``), plus 10% of rows with signals
300x larger. Runs ``recastfit scan --config`` in a subprocess (local back end, ``--cores``
workers, fast engine by default) and prints wall time, peak RSS (the largest single process and
the whole process tree, sampled every 0.2 s), ok/failed counts, then plain pyhf
(``pyhf.infer.hypotest`` per point, numpy backend) on a sample of the same rows: its ms/point,
the ratio to the scan's ms/point, and max |dCLs| between the two on the sample.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recastfit.scan.example import random_yields  # noqa: E402
from recastfit.scan.tasks import YieldAnalysis, tasks_from_rows  # noqa: E402

SHARED = Path(os.environ.get("RECASTFIT_SHARED", ROOT.parent / "shared"))
STAU = SHARED / "data" / "pallets" / "ATLAS-SUSY-2018-04-staus"
COLUMNS = {"y_sr1": ("SR1cut_cuts", 0), "y_sr2": ("SR2cut_cuts", 0)}
CLI = "from recastfit.cli import main; raise SystemExit(main())"
CPU_S: list[float] = []  # CPU seconds per scan run (the scan process and the workers it reaped)


def _tree_rss(pid: int) -> tuple[int, int]:
    """(sum, max) RSS in bytes over ``pid`` and its descendants."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    rss = []
    for p in procs:
        try:
            rss.append(p.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(rss), max(rss, default=0)


def run_scan(
    cfg: Path, cores: int, env: dict[str, str], kill_when: int | None = None, db: Path | None = None
):
    """Run ``recastfit scan``; returns (rc, wall s, peak tree RSS, peak process RSS, stdout, stderr).

    Adds the CPU seconds of the scan and the workers it reaped to ``CPU_S``."""
    cmd = [sys.executable, "-c", CLI, "scan", "--config", str(cfg), "--cores", str(cores)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        peak_sum = peak_one = 0
        while proc.poll() is None:
            s, m = _tree_rss(proc.pid)
            peak_sum, peak_one = max(peak_sum, s), max(peak_one, m)
            if kill_when is not None and db is not None and db.exists() and _count(db) >= kill_when:
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        CPU_S.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        out.seek(0), err.seek(0)
        return proc.returncode, wall, peak_sum, peak_one, out.read(), err.read()


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _count(db: Path) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def plain_pyhf(bkg: dict, rows: dict, idx: list[int]) -> tuple[dict[str, float], dict[str, Any]]:
    """Seconds per point of ``pyhf.infer.hypotest`` (numpy) on rows ``idx`` by name; CLs by name
    (None where pyhf's fit failed)."""
    import pyhf

    pyhf.set_backend("numpy")
    sub = {k: [v[i] for i in idx] for k, v in rows.items()}
    tasks = tasks_from_rows(sub, YieldAnalysis("staus", bkg, COLUMNS), id_column="name")
    ws = pyhf.Workspace(bkg)
    out, secs = {}, {}
    for task in tasks:
        t0 = time.perf_counter()
        model = ws.model(patches=[task.patch])
        try:
            obs, exp = pyhf.infer.hypotest(
                1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
            )
            out[task.name] = (float(obs), [float(e) for e in exp])
        except pyhf.exceptions.FailedMinimization as exc:  # plain pyhf fails some 300x points
            out[task.name] = None
            print(f"  plain pyhf failed on {task.name}: {str(exc)[:80]}")
        secs[task.name] = time.perf_counter() - t0
    return secs, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--engine", default="fast", choices=["fast", "pyhf"])
    ap.add_argument("--chunk-rows", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, help="points per task (default: the scan's own choice)")
    ap.add_argument("--pyhf-sample", type=int, default=40, help="rows timed with plain pyhf (half hard)")
    ap.add_argument(
        "--kill-at", type=float, help="also: kill -9 at this fraction of rows stored, then resume"
    )
    ap.add_argument("--workdir", type=Path, help="keep files here (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="keep the scan already in --workdir; time pyhf only")
    ap.add_argument("--hard-fraction", type=float, default=0.1, help="fraction of rows with 300x signals")
    args = ap.parse_args()
    if not STAU.exists():
        print(f"bench_scan: skipped: {STAU} not found (set RECASTFIT_SHARED)")
        return 0
    import pyarrow.parquet as pq

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scan_"))
    work.mkdir(parents=True, exist_ok=True)
    table = random_yields(
        list(COLUMNS), args.rows, seed=args.seed, low=0.1, high=50.0, hard_fraction=args.hard_fraction
    )
    if not (args.reuse and (work / "yields.parquet").exists()):
        pq.write_table(table, work / "yields.parquet")
    bkg = json.loads((STAU / "BkgOnly.json").read_text())
    batch = f", batch_size: {args.batch_size}" if args.batch_size else ""
    cols = ", ".join(f"{c}: [{ch}, {b}]" for c, (ch, b) in COLUMNS.items())
    cfg = work / "scan.yaml"
    cfg.write_text(
        f"output: {work / 'out'}\nfit: {{engine: {args.engine}}}\nbackend: {{name: local{batch}}}\n"
        f"scan:\n  yields: {work / 'yields.parquet'}\n  parameters: [m1, m2]\n"
        f"  chunk_rows: {args.chunk_rows}\n"
        f"  analyses:\n    staus: {{workspace: {STAU / 'BkgOnly.json'}, columns: {{{cols}}}}}\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    db = work / "out" / "scan" / "results.sqlite"
    print(
        f"bench_scan: {args.rows} rows ({args.hard_fraction:.0%} with 300x signals), engine {args.engine}, "
        f"{args.cores} cores, work dir {work}; load average {_load()}"
    )
    saved = work / "bench.json"
    if args.reuse and saved.exists() and (work / "out" / "scan" / "cls.parquet").exists():
        prev = json.loads(saved.read_text())  # the scan of an earlier run; only pyhf is timed again
        walls, peak_sum, peak_one, out = prev["walls"], prev["peak_sum"], prev["peak_one"], prev["line"]
        print("  (scan timings from the earlier run in this work dir)")
    else:
        walls = []
        kill_when = int(args.kill_at * args.rows) if args.kill_at else None
        rc, wall, peak_sum, peak_one, out, err = run_scan(cfg, args.cores, env, kill_when, db)
        walls.append(wall)
        if kill_when is not None:
            stored = _count(db)
            print(f"  killed (rc {rc}) after {wall:.1f} s with {stored} rows stored; resuming")
            rc, wall, s2, o2, out, err = run_scan(cfg, args.cores, env)
            walls.append(wall)
            peak_sum, peak_one = max(peak_sum, s2), max(peak_one, o2)
            print(f"  resume: {out.strip().splitlines()[-1] if out.strip() else err[-500:]}")
        if rc not in (0, 1):
            print(err[-3000:])
            return 1
        line = out.strip().splitlines()[-1] if out.strip() else ""
        for text in err.splitlines():
            if text.startswith("scan time:"):
                print(f"  {text}")
        saved.write_text(
            json.dumps({"walls": walls, "peak_sum": peak_sum, "peak_one": peak_one, "line": line})
        )
    cls = pq.read_table(work / "out" / "scan" / "cls.parquet").to_pydict()
    status = np.array(cls["staus.status"])
    n_ok, n_failed = int((status == "ok").sum()), int((status != "ok").sum())
    total = sum(walls)
    ms_scan = 1000 * total / args.rows
    print(out.strip().splitlines()[-1] if out.strip() else "")  # the scan's own summary line
    print(
        f"scan: {args.rows} rows in {total:.1f} s ({ms_scan:.2f} ms/row end to end, "
        f"runs {', '.join(f'{w:.1f}' for w in walls)} s); ok {n_ok}, failed {n_failed}; "
        f"peak RSS {peak_one / 2**20:.0f} MiB (largest process), {peak_sum / 2**20:.0f} MiB (process tree)"
    )
    reasons = {}
    for s, r in zip(cls["staus.status"], cls["staus.reason"], strict=True):
        if s != "ok":
            reasons[str(r)[:100]] = reasons.get(str(r)[:100], 0) + 1
    for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  failed x{n}: {r}")
    if CPU_S:
        print(
            f"  CPU (scan + reaped workers): {sum(CPU_S):.0f} s, {1000 * sum(CPU_S) / args.rows:.2f} ms/row; "
            f"load average at the end {_load()}"
        )
    if args.pyhf_sample <= 0:
        return 0
    rows = table.to_pydict()
    hard = np.flatnonzero(np.asarray(rows["y_sr1"]) > 50.0)
    easy = np.flatnonzero(np.asarray(rows["y_sr1"]) <= 50.0)
    half = args.pyhf_sample // 2
    idx = [int(i) for i in np.concatenate([easy[:half], hard[: args.pyhf_sample - half]])]
    secs, ref = plain_pyhf(bkg, rows, idx)
    ms_pyhf = 1000 * sum(secs.values()) / len(secs)
    hard_names = {rows["name"][i] for i in hard}
    ms_easy = 1000 * np.mean([t for n, t in secs.items() if n not in hard_names] or [np.nan])
    ms_hard = 1000 * np.mean([t for n, t in secs.items() if n in hard_names] or [np.nan])
    by_name = {n: i for i, n in enumerate(cls["name"])}
    diffs = []
    for name, got_ref in ref.items():
        i = by_name[name]
        if got_ref is None or cls["staus.status"][i] != "ok":
            continue
        obs, exp = got_ref
        got = [cls["staus.cls_obs"][i], *(cls[f"staus.cls_exp_{j}"][i] for j in range(5))]
        diffs.append(max(abs(a - b) for a, b in zip(got, [obs, *exp], strict=True)))
    worst = max(diffs, default=float("nan"))
    ms_mix = (1 - args.hard_fraction) * ms_easy + args.hard_fraction * (ms_hard if hard.size else 0.0)
    n_pyhf_failed = sum(v is None for v in ref.values())
    print(
        f"plain pyhf: {n_pyhf_failed} of {len(ref)} sample fits failed; {ms_pyhf:.1f} ms/point "
        f"on {len(idx)} rows ({half} ordinary: {ms_easy:.0f} ms, "
        f"{len(idx) - half} 300x: {ms_hard:.0f} ms); at the scan's mix {ms_mix:.0f} ms/row: "
        f"the scan is {ms_mix / ms_scan:.0f}x faster end to end; max |dCLs| vs pyhf {worst:.1e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
