"""`recastfit contour`: exclusion lines (JSON + HEPData) and figures from a results.json."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

__all__ = ["register", "run", "options_from_args", "record_from_manifest"]

log = logging.getLogger(__name__)

# CLI flag (argparse dest) -> ContourOptions field
_OPTION_FLAGS = {
    "mirror": "mirror",
    "method": "method",
    "level": "level",
    "resolution": "resolution",
    "reference": "reference",
    "reference_label": "reference_label",
    "title": "title",
    "color_by": "color_by",
    "style": "style",
    "band2": "band2",
    "sqrts": "sqrts",
    "lumi": "lumi",
    "label": "label",
    "location": "location",
    "description": "description",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "contour",
        help="CLs = 0.05 contours (observed, expected, +-1/2 sigma), figures and a HEPData submission",
        description="Interpolate the significance of CLs over the grid of RESULTS_JSON and write the "
        "CLs = level lines; failed points are masked and marked on the figure. With --out-dir, write "
        "contour.json, contour.yaml, contour.png, contour.pdf and the HEPData submission folder hepdata/ "
        "there; otherwise only the files named by --json/--yaml/--png/--pdf/--hepdata.",
    )
    p.add_argument(
        "results",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="results.json of one analysis (with --overlay: two or more contour.json files)",
    )
    p.add_argument(
        "--overlay",
        action="store_true",
        help="draw the observed and expected lines of several contour.json files on one figure (--png/--pdf)",
    )
    p.add_argument("--labels", nargs="+", metavar="TEXT", help="legend text per file with --overlay")
    p.add_argument("--out-dir", type=Path, metavar="DIR", help="write every output into DIR")
    p.add_argument("--config", type=Path, metavar="CONFIG", help="take the options from its contour: section")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="contour.json to write")
    p.add_argument(
        "--yaml", type=Path, metavar="OUT.yaml", help="single-file HEPData submission of the tables"
    )
    p.add_argument("--png", type=Path, metavar="OUT.png", help="figure as PNG")
    p.add_argument("--pdf", type=Path, metavar="OUT.pdf", help="figure as PDF")
    p.add_argument("--hepdata", type=Path, metavar="DIR", help="HEPData submission folder to write")
    p.add_argument(
        "--hepdata-record",
        metavar="ID",
        help="HEPData record of the reinterpreted likelihoods (ins<INSPIRE id>, a recid or a HEPData DOI)",
    )
    p.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="the fetch step's manifest: its source gives the HEPData record (unless --hepdata-record)",
    )
    p.add_argument(
        "--reference",
        metavar="FILE",
        help="reference contour to overlay (contour.json, HEPData YAML or 'x y' text)",
    )
    p.add_argument("--reference-label", help="legend text of the reference line (default: published)")
    p.add_argument(
        "--mirror",
        choices=["auto", "diagonal", "none"],
        help="mirror points across m2 = m1 (default auto: when all points have m2 <= m1)",
    )
    p.add_argument("--method", choices=["rbf", "linear"], help="interpolation of Z (default rbf)")
    p.add_argument("--level", type=float, help="CLs level (default 0.05)")
    p.add_argument("--resolution", type=int, help="interpolation grid nodes per axis (default 300)")
    p.add_argument("--title", help="figure title (default: the analysis name)")
    p.add_argument("--xlabel", help="x-axis label (default: from the results' labels and units)")
    p.add_argument("--ylabel", help="y-axis label (default: from the results' labels and units)")
    p.add_argument("--color-by", choices=["cls", "significance"], help="colour of grid points (default cls)")
    p.add_argument("--style", choices=["plain", "atlas", "cms"], help="figure style (atlas/cms via mplhep)")
    p.add_argument(
        "--band2",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw the expected +-2 sigma band (default: on)",
    )
    p.add_argument("--sqrts", help="centre-of-mass energy text, e.g. '13 TeV'")
    p.add_argument("--lumi", help="luminosity text, e.g. '139 fb$^{-1}$'")
    p.add_argument("--label", help="analysis text on the figure")
    p.add_argument("--location", help="HEPData table location")
    p.add_argument("--description", help="HEPData submission comment")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):  # -> ContourOptions
    """The config's ``contour:`` section (with ``--config``), then the command-line flags on top."""
    from recastfit.contour import ContourOptions

    opts = ContourOptions()
    if getattr(args, "config", None):
        from recastfit.config import load_config

        cfg = load_config(args.config)
        opts = ContourOptions.from_dict(cfg.contour, file=cfg.file)
    given = {f: getattr(args, a) for a, f in _OPTION_FLAGS.items() if getattr(args, a, None) is not None}
    if given:
        flags = ContourOptions.from_dict(given, file="command line")
        opts = dataclasses.replace(opts, **{k: getattr(flags, k) for k in given})
    return opts


def record_from_manifest(path: Path) -> str | int | None:
    """The HEPData record named by a fetch manifest's ``source`` (None for a local pallet)."""
    from recastfit.errors import InputError
    from recastfit.fileio import load_json_file
    from recastfit.submission import hepdata_reference

    manifest = load_json_file(path, what="manifest")
    if not isinstance(manifest, dict):
        raise InputError(str(path), None, "expected the fetch step's manifest (a JSON object)")
    return hepdata_reference(manifest.get("source"))


def _overlay(args: argparse.Namespace, opts) -> int:
    from recastfit.errors import InputError
    from recastfit.plot import draw_overlay

    if not args.png:
        raise InputError(str(args.results[0]), None, "--overlay needs --png (and optionally --pdf)")
    if args.labels is not None and len(args.labels) != len(args.results):
        raise InputError(
            str(args.results[0]), None, f"--labels: {len(args.labels)} labels for {len(args.results)} files"
        )
    draw_overlay(args.results, args.labels, args.png, opts, pdf=args.pdf)
    if not args.quiet:
        print(f"recastfit contour: wrote {args.png} ({len(args.results)} analyses)")
    return 0


def run(args: argparse.Namespace) -> int:
    from recastfit.contour import draw_contour_files, draw_figure, lines_from_results
    from recastfit.errors import InputError

    opts = options_from_args(args)
    if args.overlay:
        return _overlay(args, opts)
    if len(args.results) != 1:
        raise InputError(str(args.results[1]), None, "one RESULTS_JSON only (several need --overlay)")
    args.results = args.results[0]
    if args.hepdata_record is None and args.manifest:
        args.hepdata_record = record_from_manifest(args.manifest)
    if args.out_dir:
        out = draw_contour_files(args.results, args.out_dir, opts, hepdata_record=args.hepdata_record)
        if not args.quiet:
            counts = ", ".join(f"{k}: {n}" for k, n in out["lines"].items())
            print(f"recastfit contour: wrote {args.out_dir} (lines per kind: {counts})")
        return 0
    if not (args.json or args.yaml or args.png or args.pdf or args.hepdata):
        raise InputError(
            str(args.results), None, "nothing to write: give --out-dir or --json/--yaml/--png/--pdf"
        )
    from recastfit.submission import hepdata_reference

    arrays, cs = lines_from_results(args.results, opts)
    record = hepdata_reference(args.hepdata_record)
    if args.json:
        cs.to_json(args.json, hepdata_record=record)
    if args.yaml:
        cs.to_yaml(args.yaml, arrays, opts, hepdata_record=record)
    if args.png or args.pdf:
        draw_figure(arrays, cs, opts, png=args.png, pdf=args.pdf, xlabel=args.xlabel, ylabel=args.ylabel)
    if args.hepdata:
        from recastfit.submission import write_submission_folder

        write_submission_folder(cs, arrays, args.hepdata, opts, hepdata_record=record)
    counts = ", ".join(f"{k}: {len(v)}" for k, v in cs.lines.items())
    if not args.quiet:
        print(
            f"recastfit contour: wrote {args.json or args.yaml or args.png or args.pdf or args.hepdata} "
            f"(lines per kind: {counts})"
        )
    return 0
