"""`recastfit fit`: hypothesis tests for every patch, durable and resumable."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from recastfit.config import load_config


def run(args: argparse.Namespace) -> int:
    from recastfit.pipeline import read_manifest, run_fit_step

    cfg = load_config(args.config)
    if args.engine:
        cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, engine=args.engine))
    if args.backend:
        cfg = dataclasses.replace(cfg, backend={**cfg.backend, "name": args.backend})
    return run_fit_step(
        cfg,
        read_manifest(Path(args.manifest)),
        Path(args.patchset),
        Path(args.out),
        cores=args.cores,
        quiet=args.quiet,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="CLs at mu_test for every signal patch (pyhf or the fast engine)")
    p.add_argument("--config", required=True, help="workflow config (YAML)")
    p.add_argument("--manifest", required=True, help="pallet manifest written by `recastfit fetch`")
    p.add_argument("--patchset", required=True, help="signal PatchSet JSON")
    p.add_argument("--out", required=True, help="results.json to write")
    p.add_argument("--cores", type=int, default=1, help="worker processes for the local back end")
    p.add_argument("--engine", choices=["pyhf", "fast"], help="override fit.engine")
    p.add_argument("--backend", choices=["local", "parsl", "dask", "funcx"], help="override backend.name")
    p.set_defaults(func=run)
