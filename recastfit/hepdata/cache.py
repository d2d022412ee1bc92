"""Content-addressed cache of downloaded archives.

Layout under the cache root::

    blobs/<sha[:2]>/<sha256>      the archive bytes, named by their sha256
    index/<sha256(key)>.json      {"key", "sha256", "filename", "url", "size", "fetched_at"}
    tmp/                          downloads in progress (same file system: atomic rename)

Every hit is re-hashed; a blob whose bytes no longer match its name is removed and
reported as a miss, so a corrupted cache heals by re-fetching.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from recastfit.errors import InputError
from recastfit.fileio import load_json_file, write_json_atomic

__all__ = ["Cache", "CacheEntry", "default_cache_dir", "sha256_file"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """RECASTFIT_CACHE_DIR, else the platform's user cache dir for recastfit."""
    env = os.environ.get("RECASTFIT_CACHE_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("recastfit"))


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One cached archive, as recorded in the index."""

    key: str
    sha256: str
    path: Path
    filename: str
    url: str | None
    size: int


class Cache:
    """The archive cache rooted at ``root`` (created on first write)."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    # -- paths ---------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def _index_path(self, key: str) -> Path:
        return self.root / "index" / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def tmp_dir(self) -> Path:
        """Folder for downloads in progress (inside the cache, so the final rename is atomic)."""
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- read ----------------------------------------------------------------------------
    def lookup(self, key: str, *, verify: bool = True) -> CacheEntry | None:
        """The entry for ``key`` if present and intact; None (after cleaning up) otherwise."""
        index = self._index_path(key)
        try:
            meta = load_json_file(index, limit_name="max_config_bytes", what="cache index entry")
        except InputError:
            return None
        if not isinstance(meta, dict):
            return None
        sha = str(meta.get("sha256", ""))
        blob = self.blob_path(sha)
        if len(sha) != 64 or not blob.is_file():
            log.warning("cache: index entry for %s points to a missing archive; ignoring it", key)
            index.unlink(missing_ok=True)
            return None
        if verify:
            actual = sha256_file(blob)
            if actual != sha:
                log.warning(
                    "cache: %s is corrupted (sha256 %s, expected %s); removing it and fetching again",
                    blob,
                    actual,
                    sha,
                )
                blob.unlink(missing_ok=True)
                index.unlink(missing_ok=True)
                return None
        return CacheEntry(
            key, sha, blob, str(meta.get("filename") or sha), meta.get("url"), int(meta.get("size", 0))
        )

    # -- write ---------------------------------------------------------------------------
    def store(self, key: str, tmp_file: Path, sha256: str, *, filename: str, url: str | None) -> CacheEntry:
        """Move a fully downloaded ``tmp_file`` into the cache and index it under ``key``."""
        blob = self.blob_path(sha256)
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_file, blob)
        size = blob.stat().st_size
        meta = {
            "key": key,
            "sha256": sha256,
            "filename": filename,
            "url": url,
            "size": size,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(self._index_path(key), meta)
        return CacheEntry(key, sha256, blob, filename, url, size)
