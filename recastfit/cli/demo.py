"""`recastfit demo`: write the offline demo analysis (pallet + signal yields)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recastfit.demo import write_demo


def run(args: argparse.Namespace) -> int:
    paths = write_demo(Path(args.out))
    if not args.quiet:
        for what, path in paths.items():
            print(f"{what:10s} {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate the offline demo analysis (workspace + signal grid)")
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.set_defaults(func=run)
