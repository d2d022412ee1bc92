"""`recastfit patches`: build the new-signal PatchSet named in the config."""

from __future__ import annotations

import argparse
from pathlib import Path

from recastfit.config import load_config


def run(args: argparse.Namespace) -> int:
    from recastfit.fileio import write_json_atomic
    from recastfit.manifest import read_manifest
    from recastfit.pipeline import signal_patchset

    cfg = load_config(args.config)
    spec = signal_patchset(cfg, read_manifest(Path(args.manifest)))
    write_json_atomic(Path(args.out), spec)
    if not args.quiet:
        print(f"recastfit patches: {len(spec['patches'])} signal patches -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patches", help="turn the configured signal source into a pyhf PatchSet")
    p.add_argument("--config", required=True, help="workflow config (YAML)")
    p.add_argument("--manifest", required=True, help="pallet manifest written by `recastfit fetch`")
    p.add_argument("--out", required=True, help="output PatchSet JSON")
    p.set_defaults(func=run)
