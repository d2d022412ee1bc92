"""`recastfit <verb>`: a thin mirror of the library; each verb lives in its own module.

Every module in this package that defines ``register(subparsers)`` adds one verb; the
verb's handler is stored as ``func`` on the parsed namespace and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from recastfit.errors import RecastfitError

__all__ = ["main", "build_parser", "version_string"]


def version_string() -> str:
    """``recastfit <version>`` from the installed distribution's metadata (the package's
    ``__version__`` when it runs from a source tree that is not installed), with Python and pyhf.

    >>> version_string().startswith("recastfit ")
    True
    """
    import platform
    from importlib import metadata

    try:
        version = metadata.version("recastfit")
    except metadata.PackageNotFoundError:
        from recastfit import __version__ as version
    try:
        pyhf = metadata.version("pyhf")
    except metadata.PackageNotFoundError:
        pyhf = "not installed"
    return f"recastfit {version} (Python {platform.python_version()}, pyhf {pyhf})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recastfit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_string())
    parser.add_argument("--quiet", action="store_true", help="no progress output (for CI)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except RecastfitError as exc:
        print(f"recastfit {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"recastfit {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
