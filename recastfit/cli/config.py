"""`recastfit config check FILE | keys | limits`: validate a config before a run, and the reference
tables of every config key and every input limit (the README's tables are these outputs)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "keys_table", "limits_table"]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _walk(node: dict, prefix: str, rows: list[tuple[str, str, str]]) -> None:
    for name, sub in (node.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        key = f"{prefix}{name}"
        if "enum" in sub:
            kind = " / ".join(f"`{v}`" for v in sub["enum"])
        else:
            kind = sub.get("type", "")
            kind = "/".join(kind) if isinstance(kind, list) else kind
        default = f"`{sub['default']}`" if "default" in sub and sub["default"] not in ({}, []) else ""
        desc = sub.get("description", "")
        if sub.get("properties"):
            if desc:
                rows.append((key, desc, default))
            _walk(sub, f"{key}.", rows)
        else:
            rows.append((key, f"{desc} ({kind})" if desc and kind else desc or str(kind), default))


def keys_table() -> str:
    """Markdown table of every config key the schema defines (signal keys per type are in the README).

    >>> "| `fit.timeout` |" in keys_table()
    True
    """
    from recastfit.config import schema

    rows: list[tuple[str, str, str]] = []
    _walk(schema(), "", rows)
    lines = ["| key | meaning | default |", "|---|---|---|"]
    lines += [f"| `{k}` | {_cell(d)} | {_cell(v)} |" for k, d, v in rows]
    return "\n".join(lines)


def limits_table() -> str:
    """Markdown table of every limit on untrusted inputs, its default and its variable.

    >>> "RECASTFIT_MAX_CONFIG_BYTES" in limits_table()
    True
    """
    from recastfit.limits import LIMITS

    lines = ["| limit | bounds | default | raise with |", "|---|---|---|---|"]
    for name, spec in LIMITS.items():
        value = spec.default
        shown = f"{int(value) >> 20} MiB" if value >= (1 << 20) and value % (1 << 20) == 0 else f"{value:g}"
        lines.append(f"| `{name}` | {_cell(spec.doc)} | {shown} | `{spec.env}` |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.what == "keys":
        print(keys_table())
    elif args.what == "limits":
        print(limits_table())
    else:
        from recastfit.config import Config, load_run

        if not args.file:
            raise SystemExit("recastfit config check: give the config file to check")
        run_cfg = load_run(args.file)
        configs = [run_cfg] if isinstance(run_cfg, Config) else list(run_cfg.configs)
        for cfg in configs:
            print(
                f"{args.file}: ok: analysis {cfg.analysis}, signal {cfg.signal['type']}, "
                f"engine {cfg.fit.engine}, backend {cfg.backend.get('name', 'local')}, "
                f"{cfg.run.jobs} fit job(s)"
            )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check a config file; list every config key or input limit")
    p.add_argument("what", choices=["check", "keys", "limits"], help="check FILE | keys | limits")
    p.add_argument("file", nargs="?", help="the config file to check")
    p.set_defaults(func=run)
