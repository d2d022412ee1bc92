"""`recastfit demo`: write the offline demo analysis (pallet, signal yields, points file)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    from recastfit.demo import write_demo

    paths = write_demo(Path(args.out), grid=args.grid)
    if not args.quiet:
        for what, path in paths.items():
            print(f"{what:10s} {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from recastfit.demo import GRIDS

    p = sub.add_parser(
        "demo",
        help="generate the offline demo analysis (workspace + signal grid)",
        description="Write DIR/pallet/BkgOnly.json, DIR/signal_yields.json, DIR/points.json "
        "([{name, values}], usable as signal.points) and DIR/grid.json.",
    )
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.add_argument(
        "--grid",
        choices=GRIDS,
        default="full",
        help="full: 54 points (default); small: 6 points whose contour still crosses (quick runs)",
    )
    p.set_defaults(func=run)
