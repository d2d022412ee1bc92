"""`recastfit contour`: exclusion lines (JSON + HEPData YAML) and figures from a results.json."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "contour",
        help="CLs = 0.05 contours (observed, expected, +-1/2 sigma) and figures from a results file",
        description="Interpolate the significance of CLs over the grid of RESULTS_JSON and write the "
        "CLs = level lines; failed points are masked and marked on the figure.",
    )
    p.add_argument("results", type=Path, metavar="RESULTS_JSON", help="results.json of one analysis")
    p.add_argument("--json", type=Path, required=True, metavar="OUT.json", help="contour.json to write")
    p.add_argument("--yaml", type=Path, metavar="OUT.yaml", help="HEPData-style YAML tables of the lines")
    p.add_argument("--png", type=Path, metavar="OUT.png", help="figure as PNG")
    p.add_argument("--pdf", type=Path, metavar="OUT.pdf", help="figure as PDF")
    p.add_argument(
        "--reference",
        type=Path,
        metavar="FILE",
        help="reference contour to overlay (contour.json, HEPData YAML or 'x y' text)",
    )
    p.add_argument("--reference-label", default="published", help="legend text of the reference line")
    p.add_argument(
        "--mirror",
        choices=["auto", "diagonal", "none"],
        default="auto",
        help="mirror points across m2 = m1 (auto: when all points have m2 <= m1)",
    )
    p.add_argument("--method", choices=["rbf", "linear"], default="rbf", help="interpolation of Z")
    p.add_argument("--level", type=float, default=0.05, help="CLs level (default 0.05)")
    p.add_argument("--resolution", type=int, default=300, help="interpolation grid nodes per axis")
    p.add_argument("--title", help="figure title (default: the analysis name)")
    p.add_argument("--xlabel", help="x-axis label (default: from the results' labels and units)")
    p.add_argument("--ylabel", help="y-axis label (default: from the results' labels and units)")
    p.add_argument("--color-by", choices=["cls", "significance"], default="cls", help="colour of grid points")
    p.add_argument("--style", help="matplotlib style, or atlas/cms via mplhep")
    p.add_argument("--band2", action="store_true", help="also draw the expected +-2 sigma band")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recastfit.contour import contours_from_results, load_results

    data, _ = load_results(args.results)
    cs = contours_from_results(
        data, mirror=args.mirror, level=args.level, method=args.method, resolution=args.resolution
    )
    cs.to_json(args.json)
    if args.yaml:
        cs.to_yaml(args.yaml)
    if args.png or args.pdf:
        from recastfit.plot import plot_contours

        plot_contours(
            data,
            cs,
            png=args.png,
            pdf=args.pdf,
            reference=args.reference,
            reference_label=args.reference_label,
            title=args.title,
            xlabel=args.xlabel,
            ylabel=args.ylabel,
            color_by=args.color_by,
            style=args.style,
            show_band2=args.band2,
        )
    counts = ", ".join(f"{k}: {len(v)}" for k, v in cs.lines.items())
    if not args.quiet:
        print(f"recastfit contour: wrote {args.json} (lines per kind: {counts})")
    return 0
