"""Likelihood zoo: the fast engine on each likelihood in ``../shared/data/pallets``, ordinary and 300x signals

    python benchmarks/bench_zoo.py                          # 6 entries, 16 points each, 3 checked with pyhf
    python benchmarks/bench_zoo.py --points 64 --pyhf-points 8
    python benchmarks/bench_zoo.py --only staus --kinds hard
    python benchmarks/bench_zoo.py --warm-cache             # use the user's JAX compilation cache

Each (likelihood, signals) entry runs in a fresh process with an empty JAX compilation cache
(unless ``--warm-cache``), so "with compile" is what a first run on a new machine pays; "warm" is
the same call repeated in that process. Peak RSS is the entry process's ``ru_maxrss``. Plain pyhf
(numpy + scipy, optimiser tolerance 1e-12) is run on the first ``--pyhf-points`` points of each
entry in this process; ``max |dCLs|`` is over CLs_obs and the five CLs_exp; a difference counts as
agreement when it is <= 1e-3 or both values are < 1e-6.

Likelihoods and signals (``ordinary`` / ``hard``; hard = 300x = totals log-uniform 60-6000 events):

- ``staus`` (ATLAS-SUSY-2018-04): a ``signal`` sample (``mu_SIG``, ``lumi``) in SR1cut_cuts and
  SR2cut_cuts, totals log-uniform 0.1-50 (ordinary) split at random over the two regions.
- ``3L-eRJR``: the 66 published patches (ordinary, evenly picked); hard: the same patches with all
  signal numbers scaled so that each total is log-uniform 60-6000.
- ``ewk`` (ATLAS-SUSY-2018-05 full likelihood, 17 bins): a ``signal`` sample (``mu_SIG``, ``lumi``)
  in the 13 SRs, totals log-uniform 0.2-20 (ordinary) spread unevenly over the SRs.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("RECASTFIT_SHARED", ROOT.parent / "shared"))
PALLETS = SHARED / "data" / "pallets"
ENTRIES = ("staus", "3L-eRJR", "ewk")
KINDS = ("ordinary", "hard")
HARD = (60.0, 6000.0)


def _signal_patch(bkg: dict, yields: dict[str, float]) -> list[dict]:
    index = {c["name"]: i for i, c in enumerate(bkg["channels"])}
    mods = [
        {"name": "mu_SIG", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "lumi", "data": None},
    ]
    return [
        {
            "op": "add",
            "path": f"/channels/{index[ch]}/samples/0",
            "value": {"name": "signal", "data": [float(y)], "modifiers": mods},
        }
        for ch, y in yields.items()
    ]


def _scaled(patch: list[dict], factor: float) -> list[dict]:
    """``patch`` with every added sample's yields and absolute uncertainties multiplied by ``factor``."""
    out = copy.deepcopy(patch)
    for op in out:
        value = op.get("value")
        if not (isinstance(value, dict) and "data" in value and "modifiers" in value):
            continue
        value["data"] = [v * factor for v in value["data"]]
        for m in value["modifiers"]:
            if m["type"] == "histosys":
                m["data"] = {k: [v * factor for v in m["data"][k]] for k in ("hi_data", "lo_data")}
            elif m["type"] in ("staterror", "shapesys"):
                m["data"] = [v * factor for v in m["data"]]
    return out


def _total(patch: list[dict]) -> float:
    return sum(
        sum(op["value"]["data"])
        for op in patch
        if isinstance(op.get("value"), dict) and "data" in op["value"]
    )


def build(entry: str, kind: str, n: int, seed: int = 0):
    """(background spec, [(name, patch)]) of one zoo entry."""
    rng = np.random.default_rng(seed)
    lo, hi = HARD if kind == "hard" else (None, None)
    if entry == "staus":
        bkg = json.loads((PALLETS / "ATLAS-SUSY-2018-04-staus" / "BkgOnly.json").read_text())
        lo, hi = (lo, hi) if lo else (0.1, 50.0)
        tot = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        f = rng.uniform(0.0, 1.0, n)
        pts = [{"SR1cut_cuts": t * a, "SR2cut_cuts": t * (1 - a)} for t, a in zip(tot, f, strict=True)]
        return bkg, [(f"stau_{i}", _signal_patch(bkg, y)) for i, y in enumerate(pts)]
    if entry == "ewk":
        bkg = json.loads((PALLETS / "ATLAS-SUSY-2018-05-ewk" / "ewk_signal_bkgonly.json").read_text())
        srs = [c["name"] for c in bkg["channels"] if c["name"].startswith("SR")]
        lo, hi = (lo, hi) if lo else (0.2, 20.0)
        tot = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        w = rng.dirichlet(np.full(len(srs), 0.5), n)
        return bkg, [
            (f"ewk_{i}", _signal_patch(bkg, dict(zip(srs, t * wi, strict=True))))
            for i, (t, wi) in enumerate(zip(tot, w, strict=True))
        ]
    erjr = PALLETS / "3L-eRJR"
    bkg = json.loads((erjr / "BkgOnly.json").read_text())
    files = sorted(glob.glob(str(erjr / "patches" / "*.json")))
    pick = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(n, len(files)))]
    pick = (pick * (n // len(pick) + 1))[:n]
    out = []
    for i, f in enumerate(pick):
        patch = json.loads(Path(f).read_text())
        if kind == "hard":
            patch = _scaled(patch, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) / _total(patch))
        out.append((f"{Path(f).stem}_{i}", patch))
    return bkg, out


def worker(entry: str, kind: str, n: int) -> dict:
    """Run one entry with the fast engine in this (fresh) process; returns timings and results."""
    import resource

    from recastfit.infer import hypotest_batch
    from recastfit.results import FitSettings, PatchTask

    bkg, pts = build(entry, kind, n)
    tasks = [PatchTask(name, (float(i),), patch) for i, (name, patch) in enumerate(pts)]
    settings = FitSettings(engine="fast")
    t0 = time.perf_counter()
    hypotest_batch(bkg, tasks, settings)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = hypotest_batch(bkg, tasks, settings)
    warm = time.perf_counter() - t0
    return {
        "first": first,
        "warm": warm,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "results": [r.to_dict() for r in results],
    }


def pyhf_cls(bkg: dict, patches: list[list[dict]]) -> tuple[list[tuple[float, list[float]]], float]:
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    ws = pyhf.Workspace(bkg)
    out = []
    t0 = time.perf_counter()
    for patch in patches:
        model = ws.model(patches=[patch])
        obs, exp = pyhf.infer.hypotest(
            1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
        )
        out.append((float(obs), [float(e) for e in exp]))
    return out, (time.perf_counter() - t0) / max(len(patches), 1)


def _diff(res: dict, ref: tuple[float, list[float]]) -> float:
    if res["status"] != "ok":
        return float("nan")
    pairs = [(res["cls_obs"], ref[0])] + list(zip(res["cls_exp"], ref[1], strict=True))
    return max(0.0 if (a < 1e-6 and b < 1e-6) else abs(a - b) for a, b in pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=16, help="points per entry (default 16)")
    ap.add_argument("--pyhf-points", type=int, default=3, help="points per entry checked with pyhf")
    ap.add_argument("--only", nargs="*", choices=ENTRIES, default=list(ENTRIES))
    ap.add_argument("--kinds", nargs="*", choices=KINDS, default=list(KINDS))
    ap.add_argument("--warm-cache", action="store_true", help="use the user's JAX cache (default: empty)")
    ap.add_argument("--worker", nargs=3, metavar=("ENTRY", "KIND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        entry, kind, n = args.worker
        print(json.dumps(worker(entry, kind, int(n))))
        return 0
    if not PALLETS.exists():
        print(f"shared pallets not found at {PALLETS} (set RECASTFIT_SHARED)")
        return 1
    rows = []
    for entry in args.only:
        for kind in args.kinds:
            env = dict(os.environ)
            with tempfile.TemporaryDirectory(prefix="recastfit-jax-") as cache:
                if not args.warm_cache:
                    env["RECASTFIT_JAX_CACHE"] = cache
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", entry, kind, str(args.points)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
            if proc.returncode != 0:
                print(f"{entry} {kind}: worker failed\n{proc.stderr[-2000:]}")
                rows.append((entry, kind, None, None, None))
                continue
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            bkg, pts = build(entry, kind, args.points)
            k = min(args.pyhf_points, len(pts))
            ref, t_pyhf = pyhf_cls(bkg, [p for _, p in pts[:k]]) if k else ([], float("nan"))
            diffs = [_diff(r, c) for r, c in zip(out["results"], ref, strict=False)]
            rows.append((entry, kind, out, diffs, t_pyhf))
            print(f"done {entry} {kind}", flush=True)
    cache = "user" if args.warm_cache else "empty"
    print(f"\n{args.points} points per entry; pyhf on the first {args.pyhf_points}; JAX cache {cache}")
    print(
        "| likelihood | signals | ms/point warm | s with compile | peak RSS | ok/failed | pyhf s/point | "
        "warm speed-up vs pyhf | max abs dCLs |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for entry, kind, out, diffs, t_pyhf in rows:
        if out is None:
            print(f"| {entry} | {kind} | worker failed | | | | | | |")
            continue
        res = out["results"]
        ok = sum(r["status"] == "ok" for r in res)
        fb = sum(1 for r in res if r["engine"] != "fast")
        warm_ms = out["warm"] / len(res) * 1e3
        dmax = max((d for d in diffs if d == d), default=float("nan"))
        nan = sum(d != d for d in diffs)
        print(
            f"| {entry} | {kind} | {warm_ms:.1f} | {out['first']:.1f} | {out['rss'] / 2**30:.2f} GiB | "
            f"{ok}/{len(res) - ok}{f' ({fb} via pyhf)' if fb else ''} | {t_pyhf:.2f} | "
            f"{t_pyhf * 1e3 / warm_ms:.0f}x | {dmax:.1e}{f' ({nan} failed)' if nan else ''} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
