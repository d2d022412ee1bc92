"""Fetch pallets (published pyhf likelihoods) from HEPData, reliably, once and verifiably.

>>> from recastfit.hepdata import FetchOptions, fetch_pallet, discover, select  # doctest: +SKIP
>>> folder = fetch_pallet("10.17182/hepdata.90607.v3/r3", Path("pallet"))       # doctest: +SKIP
>>> select(discover(folder), None).workspace                                   # doctest: +SKIP
"""

from recastfit.hepdata.cache import Cache, CacheEntry, default_cache_dir, sha256_file
from recastfit.hepdata.discover import FoundAnalysis, discover, select, validate_analysis
from recastfit.hepdata.extract import safe_extract
from recastfit.hepdata.fetch import MARKER, fetch_archive, fetch_pallet, read_marker
from recastfit.hepdata.options import FetchOptions
from recastfit.hepdata.redact import redact_text, redact_url
from recastfit.hepdata.sources import Source, parse_source

__all__ = [
    "Cache",
    "CacheEntry",
    "FetchOptions",
    "FoundAnalysis",
    "MARKER",
    "Source",
    "default_cache_dir",
    "discover",
    "fetch_archive",
    "fetch_pallet",
    "parse_source",
    "read_marker",
    "redact_text",
    "redact_url",
    "safe_extract",
    "select",
    "sha256_file",
    "validate_analysis",
]
