"""FetchOptions: where to fetch from, where to cache, and how patiently."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FetchOptions", "DEFAULT_HEPDATA_URL", "DEFAULT_DOI_URL"]

DEFAULT_HEPDATA_URL = "https://www.hepdata.net"
DEFAULT_DOI_URL = "https://doi.org"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass
class FetchOptions:
    """How to fetch a pallet.

    ``hepdata_url`` / ``doi_url`` default to RECASTFIT_HEPDATA_URL / RECASTFIT_DOI_URL (read
    when the options are created) or the public services; ``cache_dir`` None means
    RECASTFIT_CACHE_DIR or the platform's user cache dir. ``offline`` uses only the cache;
    ``refresh`` ignores it (and re-downloads). ``retries`` counts the extra attempts after a
    transient failure, waiting about ``backoff`` * 2**k seconds before attempt k+1.
    ``max_unpacked_bytes`` None means the limit ``max_unpacked_bytes`` (:mod:`recastfit.limits`);
    download size, deadline and minimum rate are limits too (``max_download_bytes``,
    ``download_deadline_s``, ``min_download_rate``).
    """

    hepdata_url: str = field(default_factory=lambda: _env("RECASTFIT_HEPDATA_URL", DEFAULT_HEPDATA_URL))
    doi_url: str = field(default_factory=lambda: _env("RECASTFIT_DOI_URL", DEFAULT_DOI_URL))
    cache_dir: Path | str | None = None
    offline: bool = False
    timeout: float = 60.0
    retries: int = 4
    max_unpacked_bytes: int | None = None
    quiet: bool = False
    backoff: float = 1.0
    refresh: bool = False

    def __post_init__(self) -> None:
        self.hepdata_url = str(self.hepdata_url).rstrip("/")
        self.doi_url = str(self.doi_url).rstrip("/")
        if self.retries < 0:
            raise ValueError("FetchOptions.retries must be >= 0")
        if self.timeout <= 0:
            raise ValueError("FetchOptions.timeout must be > 0")

    @classmethod
    def from_settings(cls, **settings: Any) -> FetchOptions:
        """Options from config keys or CLI flags, where None or "" means "keep the default".

        >>> opts = FetchOptions.from_settings(offline=True, hepdata_url="http://h:8000/", cache_dir=None)
        >>> (opts.offline, opts.hepdata_url, opts.cache_dir)
        (True, 'http://h:8000', None)
        """
        return cls(**{k: v for k, v in settings.items() if v is not None and v != ""})
