"""`recastfit scan`: scans without a grid (pMSSM-style) - fits through the runner, best analysis, summary."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scan",
        help="fit a table of signal yields (--config) or summarise CLs tables: best analysis, excluded",
        description="With --config CONFIG: the yields table named in its scan: section (or INPUT) is fitted "
        "row by row through the runner (the configured back end; finished fits kept in "
        "<output>/<name>/results.sqlite, so a killed scan resumes), then summarised. Without --config: "
        "INPUT is a CLs table (.parquet/.csv with '<analysis>.cls_obs' and '<analysis>.cls_exp_0..4' "
        "columns) or results.json files (merged by point name), summarised into --out.",
    )
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT")
    p.add_argument(
        "--config",
        "--yields-config",
        dest="config",
        type=Path,
        metavar="YAML",
        help="a config with a 'scan:' section (yields table, analyses) and optional fit:, backend:, output:",
    )
    p.add_argument("--cores", type=int, default=1, help="worker processes for the local back end")
    p.add_argument("--out", type=Path, help="per-point table to write (.parquet or .csv; without --config)")
    p.add_argument("--summary", type=Path, help="summary JSON (default: OUT with suffix .summary.json)")
    p.add_argument("--figures", type=Path, metavar="DIR", help="write scan_1d/scan_2d figures (PNG+PDF) here")
    p.add_argument(
        "--params", default="", help="comma-separated parameters to project (1D; first two also 2D)"
    )
    p.add_argument(
        "--pair", action="append", default=None, metavar="X:Y", help="a 2D projection (repeatable)"
    )
    p.add_argument("--bins", type=int, default=20, help="bins per projected parameter")
    p.add_argument("--analyses", default="", help="comma-separated analyses (default: all found)")
    p.add_argument("--id-column", help="point id column (default: name/id/point if present)")
    p.add_argument("--level", type=float, default=0.05, help="CLs level (default 0.05)")
    p.add_argument("--batch-size", type=int, default=50_000, help="rows per streamed batch")
    p.add_argument("--cls-table", type=Path, help="where merged CLs go (default beside OUT)")
    p.set_defaults(func=run)


def _run_config(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from recastfit.errors import InputError
    from recastfit.scan import load_scan_config, run_scan

    cfg = load_scan_config(args.config)
    if len(args.inputs) > 1:
        raise InputError(str(args.inputs[1]), None, "with --config, give at most one yields table")
    if args.inputs:
        cfg = replace(cfg, yields=args.inputs[0])
    if args.id_column:
        cfg = replace(cfg, id_column=args.id_column)
    outcome = run_scan(cfg, cores=args.cores, quiet=args.quiet)
    print(outcome.line() + f"; wrote {outcome.points_path} and {outcome.summary_path}")
    return outcome.exit_code


def run(args: argparse.Namespace) -> int:
    from recastfit.errors import InputError

    if args.config:
        return _run_config(args)
    from recastfit.scan import results_to_table, scan_table

    if not args.inputs:
        raise InputError("recastfit scan", "INPUT", "give a CLs table or results.json files, or --config")
    if args.out is None:
        raise InputError("recastfit scan", "--out", "the per-point table to write (without --config)")
    out: Path = args.out
    cls_path = args.cls_table or out.with_name(
        out.stem + "_cls" + (".csv" if out.suffix == ".csv" else ".parquet")
    )
    id_column = args.id_column
    if all(p.suffix == ".json" for p in args.inputs):
        table = results_to_table(args.inputs, cls_path)
        id_column = id_column or "name"
    elif len(args.inputs) == 1:
        table = args.inputs[0]
    else:
        raise InputError(str(args.inputs[1]), None, "expected one table, or only results.json files")
    params = [p for p in args.params.split(",") if p]
    pairs = [tuple(s.split(":", 1)) for s in args.pair] if args.pair else None
    summary = scan_table(
        table,
        out,
        analyses=[a for a in args.analyses.split(",") if a] or None,
        parameters=params,
        pairs=pairs,
        id_column=id_column,
        level=args.level,
        bins=args.bins,
        batch_size=args.batch_size,
    )
    summary_path = args.summary or out.with_name(out.stem + ".summary.json")
    summary.to_json(summary_path)
    if args.figures:
        from recastfit.scan.figures import plot_scan_summary

        plot_scan_summary(summary, args.figures)
    if not args.quiet:
        print(
            f"recastfit scan: {summary.n_excluded}/{summary.n_points} points excluded "
            f"({summary.n_failed} failed); wrote {out} and {summary_path}"
        )
    return 0
