"""The demo preserved analysis as a command-line step (run by the yadage spec ``specs/demo``).

One theory point's masses -> the demo analysis's expected signal per region and bin, written as
a ROOT file (one TH1 per region; bin contents = yields, bin errors = MC stat) the way a real
preserved analysis hands on its results, or, with a ``.json`` output, as the point's yields
file ``{name, values, channels}``::

    python -m recastfit.signals.demo_step --m-parent 500 --m-lsp 100 --out signal_hists.root
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recastfit.signals.model import PointYields

__all__ = ["run_analysis", "main"]


def run_analysis(m_parent: float, m_lsp: float, out: Path, name: str | None = None) -> PointYields:
    """Evaluate the demo analysis at one point and write ``out`` (``.root`` or ``.json``)."""
    from recastfit.demo import point_name, signal_yields

    point = PointYields(
        name or point_name(m_parent, m_lsp), (m_parent, m_lsp), signal_yields(m_parent, m_lsp)
    )
    out = Path(out)
    if out.suffix.lower() == ".root":
        from recastfit.signals.root_hists import write_root_yields

        write_root_yields(out, [point], pattern="{region}")
    else:
        out.write_text(json.dumps(point.to_dict(), indent=1))
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recastfit.signals.demo_step", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--m-parent", type=float, required=True, help="parent mass (GeV)")
    parser.add_argument("--m-lsp", type=float, required=True, help="LSP mass (GeV)")
    parser.add_argument("--out", type=Path, required=True, help="output: .root (TH1 per region) or .json")
    parser.add_argument("--name", help="point name (default demo_<m_parent>_<m_lsp>)")
    args = parser.parse_args(argv)
    try:
        run_analysis(args.m_parent, args.m_lsp, args.out, args.name)
    except ValueError as exc:  # e.g. m_LSP >= m_parent
        print(f"demo_step: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
