"""`recastfit fit`: hypothesis tests for every patch, durable and resumable."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from recastfit.config import load_config

__all__ = ["register", "run", "summary_line"]


def summary_line(results: dict) -> str:
    """What results.json holds, counted by status (points flagged ``failed`` by the engine count as
    failed even when the fit step itself did not raise), with the most common failure reasons.

    >>> summary_line({"points": [{"status": "failed", "reason": "no jax"}] * 3})
    'recastfit fit: 3 points: 0 ok, 3 failed (no jax: 3)'
    >>> summary_line({"points": [{"status": "ok"}, {"status": "failed"}]})
    'recastfit fit: 2 points: 1 ok, 1 failed (no reason given: 1)'
    """
    from collections import Counter

    points = results.get("points") or []
    ok = sum(1 for p in points if isinstance(p, dict) and p.get("status") == "ok")
    failed = len(points) - ok
    line = f"recastfit fit: {len(points)} points: {ok} ok, {failed} failed"
    if failed:
        reasons = Counter(
            str((p.get("reason") if isinstance(p, dict) else None) or "no reason given").splitlines()[0][:120]
            for p in points
            if not (isinstance(p, dict) and p.get("status") == "ok")
        )
        shown = "; ".join(f"{r}: {n}" for r, n in reasons.most_common(3))
        more = f"; {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
        line += f" ({shown}{more})"
    return line


def run(args: argparse.Namespace) -> int:
    from recastfit.manifest import read_manifest
    from recastfit.pipeline import run_fit_step

    cfg = load_config(args.config)
    if args.engine:
        cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, engine=args.engine))
    if args.backend:
        cfg = dataclasses.replace(cfg, backend={**cfg.backend, "name": args.backend})
    code = run_fit_step(
        cfg,
        read_manifest(Path(args.manifest)),
        Path(args.patchset),
        Path(args.out),
        cores=args.cores,
        quiet=args.quiet,
    )
    from recastfit.fileio import load_json_file

    print(summary_line(load_json_file(Path(args.out), what="results file")))
    return code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="CLs at mu_test for every signal patch (pyhf or the fast engine)")
    p.add_argument("--config", required=True, help="workflow config (YAML)")
    p.add_argument("--manifest", required=True, help="pallet manifest written by `recastfit fetch`")
    p.add_argument("--patchset", required=True, help="signal PatchSet JSON")
    p.add_argument("--out", required=True, help="results.json to write")
    p.add_argument("--cores", type=int, default=1, help="worker processes for the local back end")
    p.add_argument("--engine", choices=["pyhf", "fast"], help="override fit.engine")
    p.add_argument(
        "--backend",
        choices=["local", "parsl", "dask", "funcx", "globus_compute"],
        help="override backend.name",
    )
    p.set_defaults(func=run)
