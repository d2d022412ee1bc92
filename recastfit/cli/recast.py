"""`recastfit recast`: run a preserved analysis (yadage workflow) for one point -> yields/<point>.json.

The point name and values are checked before anything is created or removed: the name by
:func:`recastfit.names.check_name` (no ``..``, no ``/``, no shell syntax), the values as finite
numbers. See :mod:`recastfit.signals.recast` for how they reach the workflow (a JSON file,
never a shell command line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from recastfit.errors import ConfigError

__all__ = ["register", "run"]

_CLI = "<command line>"


def _pairs(items: list[str] | None, flag: str) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(_CLI, flag, "NAME=VALUE", item)
        out[key] = value
    return out


def _values(items: list[str]) -> dict[str, float]:
    """``--values m1=500 m2=100`` -> finite floats (ConfigError naming --values otherwise)."""
    from recastfit.signals.recast import MAX_VALUE

    out = {}
    for key, raw in (_pairs(items, "--values") or {}).items():
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(_CLI, "--values", "PARAM=NUMBER pairs", items) from None
        if not abs(value) <= MAX_VALUE:  # also catches nan and inf
            raise ConfigError(_CLI, f"--values {key}", f"a finite number with |v| <= {MAX_VALUE:g}", raw)
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
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before yadage-run and its steps are killed (default: RECASTFIT_RECAST_TIMEOUT, 24 h)",
    )
    p.set_defaults(func=run)


def _from_config(path: Path, point: str) -> tuple[dict[str, Any], dict[str, float] | None]:
    """The ``run_point`` settings of a config's recast section, and the point's values if listed."""
    from recastfit.config import load_config
    from recastfit.signals.sources import recast_points, recast_settings

    cfg = load_config(path)
    if cfg.signal.get("type") != "recast":
        raise ConfigError(cfg.file, "signal.type", "recast", cfg.signal.get("type"))
    settings = recast_settings(cfg.signal, config_file=cfg.file, base_dir=Path.cwd())
    points = dict(
        recast_points(cfg.signal, config_file=cfg.file, base_dir=Path.cwd(), parameters=cfg.parameters)
    )
    values = dict(zip(cfg.parameters, points[point], strict=True)) if point in points else None
    settings["source"] = cfg.file
    return settings, values


def run(args: argparse.Namespace) -> int:
    from recastfit.names import check_name
    from recastfit.signals.recast import run_point

    check_name(args.point, file=_CLI, key="--point", config=True)  # before anything is read or made
    values = _values(args.values) if args.values else None
    settings: dict[str, Any] = {"source": _CLI}
    if args.config:
        settings, listed = _from_config(args.config, args.point)
        if listed is None and values is None:
            raise ConfigError(str(args.config), "signal.points", f"a point named '{args.point}'")
        values = values or listed
    elif not args.spec:
        raise ConfigError(_CLI, "--spec", "a yadage spec folder (or --config)")
    if not values:
        raise ConfigError(_CLI, "--values", "PARAM=VALUE pairs for the point")
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
