"""`recastfit fetch SOURCE --dest DIR`: download (or copy), verify, extract and list a pallet.

SOURCE is a HEPData resource DOI (``10.17182/hepdata.90607.v3/r3``, with or without
``https://doi.org/``), a HEPData resource URL, a record (``ins1755298`` or ``ins1755298.v3``,
with ``--resource FILE``), a local archive, a local folder or a ``file://`` URL.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recastfit.errors import FetchError
from recastfit.hepdata import FetchOptions, discover, fetch_pallet, select
from recastfit.manifest import write_manifest

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    if not args.verbose:  # pyhf logs every schema validation at INFO
        logging.getLogger("pyhf").setLevel(logging.WARNING)
    options = FetchOptions.from_settings(
        offline=args.offline,
        quiet=args.quiet,
        refresh=args.refresh,
        cache_dir=args.cache_dir,
        hepdata_url=args.hepdata_url,
        doi_url=args.doi_url,
        timeout=args.timeout,
        retries=args.retries,
        max_unpacked_bytes=args.max_unpacked_bytes,
    )
    folder = fetch_pallet(args.source, Path(args.dest), resource=args.resource, options=options)
    if args.manifest:
        try:
            manifest = write_manifest(Path(args.manifest), args.source, folder, args.analysis)
        except OSError as exc:
            raise FetchError(f"--manifest {args.manifest}: cannot write it: {exc.strerror or exc}") from None
        found_names = [a["name"] for a in manifest["analyses"]]
    else:
        found = discover(folder)
        found_names = [a.name for a in found]
        if args.analysis:
            select(found, args.analysis)
    if args.list:
        for analysis in discover(folder, validate=False):
            signal = analysis.patchset or analysis.patch_dir or "(no patches)"
            print(f"{analysis.name}\t{analysis.workspace}\t{signal}")
    elif not args.quiet:
        print(f"{folder}: {len(found_names)} analysis(es): {', '.join(found_names)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="fetch a pallet (HEPData DOI/URL/record, archive or folder) into DIR")
    p.add_argument(
        "source", metavar="SOURCE", help="DOI, HEPData URL, ins<id>[.vN], archive, folder or file://"
    )
    p.add_argument("--dest", required=True, metavar="DIR", help="folder to hold the extracted pallet")
    p.add_argument("--resource", metavar="NAME", help="resource file name (for a record source)")
    p.add_argument("--analysis", metavar="NAME", help="which analysis of a multi-analysis pallet")
    p.add_argument("--manifest", metavar="FILE", help="write a JSON manifest of the fetched pallet")
    p.add_argument("--list", action="store_true", help="list the analyses found (name, workspace, patches)")
    p.add_argument("--offline", action="store_true", help="use only the cache; fail naming what is missing")
    p.add_argument("--refresh", action="store_true", help="ignore the cache and download again")
    p.add_argument("--cache-dir", metavar="D", help="archive cache (default: RECASTFIT_CACHE_DIR)")
    p.add_argument("--hepdata-url", metavar="U", help="HEPData base URL (default: RECASTFIT_HEPDATA_URL)")
    p.add_argument("--doi-url", metavar="U", help="DOI resolver base URL (default: RECASTFIT_DOI_URL)")
    p.add_argument("--timeout", type=float, metavar="S", help="network timeout in seconds (default 60)")
    p.add_argument("--retries", type=int, metavar="N", help="retries on transient errors (default 4)")
    p.add_argument("--max-unpacked-bytes", type=int, metavar="B", help="refuse archives unpacking to more")
    p.set_defaults(func=run)
