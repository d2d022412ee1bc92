"""The demo preserved analysis as a command-line step (run by the yadage spec ``specs/demo``).

One theory point -> the demo analysis's expected signal per region and bin, written as a ROOT
file (one TH1 per region; bin contents = yields, bin errors = MC stat) the way a real preserved
analysis hands on its results, or, with a ``.json`` output, as the point's yields file
``{name, values, channels}``.

The point comes from a JSON parameters file written by ``recastfit recast``
(``{"name": ..., "values": {"m_parent": ..., "m_LSP": ...}}``), so no point name or value is
ever part of the step's shell command, or from validated numbers::

    python -m recastfit.demo.step --params point.json --out signal_hists.root
    python -m recastfit.demo.step --m-parent 500 --m-lsp 100 --out signal_hists.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from recastfit.demo.grid import PARAMETERS, point_name, signal_yields
from recastfit.errors import InputError, RecastfitError
from recastfit.fileio import load_json_file, write_json_atomic
from recastfit.names import check_name
from recastfit.signals.model import PointYields

__all__ = ["run_analysis", "read_params", "main"]


def read_params(path: Path | str) -> tuple[str, float, float]:
    """``(name, m_parent, m_LSP)`` from a parameters file; InputError naming the key otherwise."""
    data = load_json_file(path, what="parameters file")
    if not isinstance(data, dict):
        raise InputError(str(path), None, "expected a mapping {name, values}")
    name = check_name(data.get("name"), file=str(path), key="name")
    values = data.get("values")
    if not isinstance(values, dict):
        raise InputError(str(path), "values", f"expected a mapping {{{', '.join(PARAMETERS)}}}")
    out = []
    for key in PARAMETERS:
        v = values.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InputError(str(path), f"values.{key}", f"expected a finite number, got {v!r}")
        out.append(float(v))
    return name, out[0], out[1]


def run_analysis(m_parent: float, m_lsp: float, out: Path, name: str | None = None) -> PointYields:
    """Evaluate the demo analysis at one point and write ``out`` (``.root`` or ``.json``)."""
    point = PointYields(
        name or point_name(m_parent, m_lsp), (m_parent, m_lsp), signal_yields(m_parent, m_lsp)
    )
    out = Path(out)
    if out.suffix.lower() == ".root":
        from recastfit.signals.root_hists import write_root_yields

        write_root_yields(out, [point], pattern="{region}")
    else:
        write_json_atomic(out, point.to_dict())
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recastfit.demo.step", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--params", type=Path, help="JSON parameters file {name, values}")
    parser.add_argument("--m-parent", type=float, help="parent mass (GeV), without --params")
    parser.add_argument("--m-lsp", type=float, help="LSP mass (GeV), without --params")
    parser.add_argument("--out", type=Path, required=True, help="output: .root (TH1 per region) or .json")
    args = parser.parse_args(argv)
    try:
        if args.params:
            name, m_parent, m_lsp = read_params(args.params)
        elif args.m_parent is not None and args.m_lsp is not None:
            name, m_parent, m_lsp = None, args.m_parent, args.m_lsp
            if not (math.isfinite(m_parent) and math.isfinite(m_lsp)):
                raise ValueError("masses must be finite numbers")
        else:
            parser.error("give --params, or both --m-parent and --m-lsp")
        run_analysis(m_parent, m_lsp, args.out, name)
    except (ValueError, RecastfitError) as exc:  # e.g. m_LSP >= m_parent, a malformed parameters file
        print(f"demo_step: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
