"""`recastfit scan`: per-point best analysis, excluded flags and summary for pMSSM-style scans."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scan",
        help="excluded/allowed table and summary for a scan without a grid",
        description="INPUT is a table (.parquet/.csv) with '<analysis>.cls_obs' and "
        "'<analysis>.cls_exp_0..4' columns, or one or more results.json files (merged by point name), "
        "or, with --yields-config, a table of signal yields whose CLs are computed first.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    p.add_argument("--out", type=Path, required=True, help="per-point table to write (.parquet or .csv)")
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
    p.add_argument("--cls-table", type=Path, help="where merged/computed CLs go (default beside OUT)")
    p.add_argument(
        "--yields-config",
        type=Path,
        metavar="YAML",
        help="INPUT holds yields: analyses {name: {workspace, columns: {col: [channel, bin]}}}, "
        "settings, id_column, parameters",
    )
    p.set_defaults(func=run)


def _cls_from_yields(args: argparse.Namespace, cls_path: Path) -> tuple[Path, str]:
    import json

    import yaml

    from recastfit.errors import ConfigError
    from recastfit.results import FitSettings
    from recastfit.scan import YieldAnalysis, cls_table_from_yields

    cfg_file = str(args.yields_config)
    cfg = yaml.safe_load(args.yields_config.read_text()) or {}
    if not isinstance(cfg.get("analyses"), dict) or not cfg["analyses"]:
        raise ConfigError(cfg_file, "analyses", "a mapping name -> {workspace, columns}", cfg.get("analyses"))
    analyses = []
    for name, a in cfg["analyses"].items():
        try:
            ws = Path(a["workspace"])
            ws = ws if ws.is_absolute() else args.yields_config.parent / ws
            cols = {str(c): (str(v[0]), int(v[1])) for c, v in a["columns"].items()}
        except (KeyError, TypeError, IndexError, ValueError):
            raise ConfigError(
                cfg_file, f"analyses.{name}", "{workspace: path, columns: {col: [channel, bin]}}", a
            ) from None
        analyses.append(YieldAnalysis(str(name), json.loads(ws.read_text()), cols))
    try:
        settings = FitSettings(**(cfg.get("settings") or {}))
    except TypeError as exc:
        raise ConfigError(
            cfg_file, "settings", "FitSettings fields (mu_test, test_stat, calctype, engine)", str(exc)
        ) from None
    id_column = args.id_column or cfg.get("id_column", "name")
    params = [p for p in args.params.split(",") if p] or list(cfg.get("parameters") or [])
    cls_table_from_yields(
        args.inputs[0],
        cls_path,
        analyses,
        settings,
        id_column=id_column,
        parameters=params,
        batch_size=int(cfg.get("batch_size", 1000)),
    )
    return cls_path, id_column


def run(args: argparse.Namespace) -> int:
    from recastfit.scan import results_to_table, scan_table

    out: Path = args.out
    cls_path = args.cls_table or out.with_name(
        out.stem + "_cls" + (".csv" if out.suffix == ".csv" else ".parquet")
    )
    id_column = args.id_column
    if args.yields_config:
        table, id_column = _cls_from_yields(args, cls_path)
    elif all(p.suffix == ".json" for p in args.inputs):
        table = results_to_table(args.inputs, cls_path)
        id_column = id_column or "name"
    elif len(args.inputs) == 1:
        table = args.inputs[0]
    else:
        from recastfit.errors import InputError

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
        from recastfit.scan_figures import plot_scan_summary

        plot_scan_summary(summary, args.figures)
    if not args.quiet:
        print(
            f"recastfit scan: {summary.n_excluded}/{summary.n_points} points excluded "
            f"({summary.n_failed} failed); wrote {out} and {summary_path}"
        )
    return 0
