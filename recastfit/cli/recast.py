"""`recastfit recast`: run a preserved analysis (yadage workflow) for one point -> yields/<point>.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recastfit.errors import ConfigError

__all__ = ["register", "run"]


def _pairs(items: list[str] | None, flag: str) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("<command line>", flag, "NAME=VALUE", item)
        out[key] = value
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recast",
        help="run a yadage workflow spec for one grid point and write its yields JSON",
        description="Run `yadage-run` for one theory point (in a fresh work dir) and collect the "
        "workflow's yields output into OUT (the single-point yields format). Either name the spec and "
        "values here, or take them from the `signal:` section (type recast) of --config.",
    )
    p.add_argument("--config", type=Path, help="workflow config whose signal section has type: recast")
    p.add_argument("--spec", type=Path, help="folder of the yadage spec (holds workflow.yml, steps.yml)")
    p.add_argument("--workflow", default=None, help="workflow file inside --spec (default workflow.yml)")
    p.add_argument("--point", required=True, help="point name (also the {point} workflow input)")
    p.add_argument(
        "--values", nargs="+", metavar="PARAM=VALUE", help="grid values, e.g. m_parent=500 m_LSP=100"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="yields file to write, e.g. results/demo/yields/P.json"
    )
    p.add_argument("--workdir", type=Path, help="yadage work dir (default: <out>/../../recast/<point>)")
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        metavar="PARAM=TEMPLATE",
        help="workflow input template, e.g. m_lsp={m_LSP} (repeatable)",
    )
    p.add_argument(
        "--output", default=None, help="the workflow's yields output (glob, default **/yields.json)"
    )
    p.add_argument(
        "--region",
        dest="regions",
        action="append",
        metavar="REGION=CHANNEL",
        help="rename an output region to a workspace channel (repeatable)",
    )
    p.add_argument("--histogram", default=None, help="histogram pattern of a ROOT output (default {region})")
    p.add_argument("--backend", default=None, help="packtivity backend string, e.g. multiproc:1")
    p.add_argument("--timeout", type=float, default=None, help="seconds before the run is killed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recastfit.signals.recast import run_point

    settings: dict = {}
    values = None
    if args.config:
        from recastfit.config import load_config
        from recastfit.signals.sources import recast_points, recast_settings

        cfg = load_config(args.config)
        if cfg.signal.get("type") != "recast":
            raise ConfigError(cfg.file, "signal.type", "recast", cfg.signal.get("type"))
        settings = recast_settings(cfg.signal, config_file=cfg.file, base_dir=Path.cwd())
        points = dict(
            recast_points(cfg.signal, config_file=cfg.file, base_dir=Path.cwd(), parameters=cfg.parameters)
        )
        if args.point not in points and not args.values:
            raise ConfigError(cfg.file, "signal.points", f"a point named '{args.point}'", sorted(points)[:5])
        if args.point in points:
            values = dict(zip(cfg.parameters, points[args.point], strict=True))
    elif not args.spec:
        raise ConfigError("<command line>", "--spec", "a yadage spec folder (or --config)")
    if args.values:
        raw = _pairs(args.values, "--values") or {}
        try:
            values = {k: float(v) for k, v in raw.items()}
        except ValueError:
            raise ConfigError("<command line>", "--values", "PARAM=NUMBER pairs", args.values) from None
    if not values:
        raise ConfigError("<command line>", "--values", "PARAM=VALUE pairs for the point")
    overrides = {
        "spec_dir": args.spec,
        "workflow": args.workflow,
        "inputs": _pairs(args.inputs, "--input"),
        "output": args.output,
        "regions": _pairs(args.regions, "--region"),
        "histogram": args.histogram,
        "backend": args.backend,
        "timeout": args.timeout,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    point = run_point(name=args.point, values=values, out=args.out, workdir=args.workdir, **settings)
    if not args.quiet:
        print(
            f"recastfit recast: {point.name}: {len(point.channels)} channels -> {args.out}", file=sys.stdout
        )
    return 0
