"""fetch_pallet: SOURCE -> cached, verified archive -> safely extracted folder.

HEPData's behaviour followed here (HEPData/hepdata, ``records/views.py`` and
``records/utils/doi_minter.py``): a resource DOI ``10.17182/hepdata.<recid>.vN/rM`` is
registered to ``/record/resource/<id>?landing_page=true``, which returns the file itself
when the ``Accept`` header names its type (``application/x-tar`` for ``.tar.gz``) and
answers 406 otherwise; ``/record/resource/<id>?view=true`` always returns the file;
``/record/ins<inspire>?format=json[&version=N]`` is the record (``recid``, ``version``) and
``/record/resources/<recid>/<version>`` lists its resources with their ``file_type``
(pallets are ``HistFactory``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from recastfit.errors import FetchError, InputError
from recastfit.fileio import inside, load_json_file
from recastfit.hepdata.cache import Cache, CacheEntry
from recastfit.hepdata.client import Download, HTTPClient, NotAcceptable, clean_parts
from recastfit.hepdata.extract import archive_format, clean_leftovers, extract_to, scan_archive, staged_dir
from recastfit.hepdata.options import FetchOptions
from recastfit.hepdata.redact import redact_url
from recastfit.hepdata.sources import Source, parse_source
from recastfit.limits import LIMITS, limit

__all__ = ["fetch_pallet", "fetch_archive", "read_marker", "MARKER", "HISTFACTORY"]

log = logging.getLogger(__name__)

MARKER = ".recastfit-fetch.json"
HISTFACTORY = "HistFactory"
_PUBLIC_HOSTS = {"www.hepdata.net", "hepdata.net"}
_RESOURCE_ID_RE = re.compile(r"/record/resource/(\d+)")


def read_marker(dest: Path) -> dict | None:
    """The provenance record fetch_pallet left in ``dest`` (None if absent or unreadable)."""
    try:
        marker = load_json_file(Path(dest) / MARKER, limit_name="max_config_bytes", what="fetch marker")
    except InputError:
        return None
    return marker if isinstance(marker, dict) else None


# -- remote -> cache ----------------------------------------------------------------------------
def fetch_archive(source: Source, options: FetchOptions, cache: Cache | None = None) -> CacheEntry:
    """The cached archive for a remote ``source``, downloading it if needed (unless offline)."""
    cache = cache or Cache(options.cache_dir)
    key = source.cache_key()
    if not options.refresh:
        entry = cache.lookup(key)
        if entry is not None:
            log.info("%s: cached archive %s (sha256 %s)", source.shown, entry.path, entry.sha256[:12])
            return entry
    if options.offline:
        raise FetchError(
            f"offline: {source.describe()} is not in the cache at {cache.root} (cache key {key!r}); "
            "fetch it once with network access (without --offline) or point --cache-dir at a cache holding it"
        )
    tmp = cache.tmp_dir()
    for path in clean_parts(tmp):
        log.info("removed %s, left by an interrupted download", path)
    client = HTTPClient(
        timeout=options.timeout,
        retries=options.retries,
        backoff=options.backoff,
        quiet=options.quiet,
        what=source.text,
    )
    verify = partial(scan_archive, max_bytes=options.max_unpacked_bytes)
    try:
        dl = _download(source, options, client, tmp, verify)
    finally:
        client.close()
    try:
        entry = cache.store(key, dl.path, dl.sha256, filename=dl.filename, url=redact_url(dl.url))
    finally:
        dl.path.unlink(missing_ok=True)
        dl.release()
    log.info("%s: fetched %s (%d bytes, sha256 %s)", source.shown, dl.filename, dl.size, dl.sha256[:12])
    return entry


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _hepdata_base_for(url: str, options: FetchOptions) -> str:
    """The public host is swapped for the configured one (a mirror or a test server)."""
    return options.hepdata_url if urlsplit(url).netloc.lower() in _PUBLIC_HOSTS else _base(url)


def _download(
    source: Source, options: FetchOptions, client: HTTPClient, tmp: Path, verify: object
) -> Download:
    get = partial(client.download, tmp_dir=tmp, verify=verify)
    if source.kind == "doi":
        url = f"{options.doi_url}/{source.doi}"
        try:
            return get(url)
        except NotAcceptable as exc:
            # the landing page would not hand the file over for our Accept: use ?view=true
            m = _RESOURCE_ID_RE.search(urlsplit(exc.url).path)
            if not m:
                raise
            log.info("%s: landing page answered 406 (%s); using ?view=true", source.doi, exc.payload)
            return get(f"{_base(exc.url)}/record/resource/{m.group(1)}?view=true")
    if source.kind == "resource_url":
        base = _hepdata_base_for(source.url, options)
        return get(f"{base}/record/resource/{source.resource_id}?view=true")
    if source.kind == "url":
        return get(source.url)
    if source.kind == "record":
        base = _hepdata_base_for(source.url, options) if source.url else options.hepdata_url
        location = _resolve_record_resource(source, base, client)
        return get(location)
    raise FetchError(f"source {source.shown!r}: not a remote source")


def _resolve_record_resource(source: Source, base: str, client: HTTPClient) -> str:
    """Record (+ resource name) -> the download URL of the resource file."""
    recid, version = source.recid, source.version
    if source.inspire_id is not None or version is None:
        ident = f"ins{source.inspire_id}" if source.inspire_id is not None else str(recid)
        params = {"format": "json"}
        if version is not None:
            params["version"] = str(version)
        where = f"{base}/record/{ident}?format=json"
        record = client.get_json(f"{base}/record/{ident}", params=params)
        if not isinstance(record, dict) or "recid" not in record:
            raise FetchError(f"source {source.shown!r}: {where} has no 'recid'")
        recid = _json_int(source, where, "recid", record["recid"])
        version = _json_int(source, where, "version", record.get("version") or version or 1)
    where = f"{base}/record/resources/{recid}/{version}"
    listing = client.get_json(where)
    items = listing.get("submission_items") if isinstance(listing, dict) else None
    if not isinstance(items, list):
        raise FetchError(f"source {source.shown!r}: {where}: expected a 'submission_items' list")
    resources = [
        r
        for item in items
        if isinstance(item, dict) and isinstance(item.get("resources"), list)
        for r in item["resources"]
        if isinstance(r, dict)
    ]
    chosen = _choose_resource(source, resources, recid, version)
    location = chosen.get("location") or f"/record/resource/{chosen.get('id')}?view=true"
    if not isinstance(location, str):
        raise FetchError(f"source {source.shown!r}: {where}: resource 'location' is not a string")
    if location.startswith(("http://", "https://")):
        return location
    if "://" in location or location.startswith("//"):
        raise FetchError(f"source {source.shown!r}: {where}: refusing resource location {location!r}")
    return f"{base}{location if location.startswith('/') else '/' + location}"


def _json_int(source: Source, where: str, key: str, value: object) -> int:
    """A positive integer from an API answer, or FetchError naming the URL and the key."""
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise FetchError(
            f"source {source.shown!r}: {where}: key '{key}': expected an integer, got {value!r:.80}"
        )
    return int(value)


def _resource_name(r: dict) -> str:
    name = r.get("filename") or os.path.basename(str(r.get("file_location", ""))) or ""
    return str(name)


def _choose_resource(source: Source, resources: list[dict], recid: int, version: int) -> dict:
    pallets = [r for r in resources if str(r.get("file_type", "")).lower() == HISTFACTORY.lower()]
    listed = (
        ", ".join(
            f"{_resource_name(r) or r.get('file_description', '?')!r} (id {r.get('id')})" for r in pallets
        )
        or "none"
    )
    where = f"HEPData record {recid} version {version}"
    want = source.resource
    if want is None:
        if len(pallets) == 1:
            return pallets[0]
        raise FetchError(
            f"source {source.shown!r}: {where} has {len(pallets)} {HISTFACTORY} resources ({listed}); "
            "name the one to fetch with --resource (config key pallet.resource)"
        )
    for r in resources:
        doi = str(r.get("doi") or "")
        if want in (_resource_name(r), str(r.get("id")), doi) or (doi and doi.endswith(f"/{want}")):
            return r
    for r in resources:
        if want.lower() == _resource_name(r).lower() or want == r.get("file_description"):
            return r
    raise FetchError(
        f"source {source.shown!r}: {where} has no resource named {want!r}; {HISTFACTORY} resources: {listed}"
    )


# -- archive/folder -> dest ---------------------------------------------------------------------
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise FetchError(f"--dest {dest}: exists and is not a folder; remove it or choose another one")
    if dest.is_dir() and any(dest.iterdir()) and read_marker(dest) is None:
        raise FetchError(
            f"--dest {dest}: folder exists, is not empty and was not written by recastfit fetch "
            f"(no {MARKER}); remove it or choose another destination"
        )


def _marker_text(source: Source, sha256: str | None, **extra: object) -> str:
    record = {
        "source": source.shown,
        "key": source.cache_key(),
        "sha256": sha256,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    return json.dumps(record, indent=1)


def _copy_folder(source: Source, dest: Path, options: FetchOptions) -> Path:
    src = source.path
    files = _scan_folder(src, options)
    if dest.resolve() == src.resolve():
        return src
    if dest.resolve().is_relative_to(src.resolve()):
        raise FetchError(f"--dest {dest}: lies inside the source folder {src}")
    if src.resolve().is_relative_to(dest.resolve()):
        raise FetchError(f"--dest {dest}: holds the source folder {src}; choose another destination")
    listing = [f"{rel}:{st.st_size}:{st.st_mtime_ns}" for rel, st in files]
    fingerprint = _sha("\n".join(listing))
    marker = read_marker(dest)
    if marker and marker.get("fingerprint") == fingerprint and marker.get("source") == source.shown:
        return dest
    _check_dest(dest)
    with staged_dir(dest, "copy") as tmp:
        for rel, _st in files:
            target = tmp.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(
                    src / rel, target
                )  # fresh, writable permissions (shared pallets are read-only)
            except OSError as exc:
                raise FetchError(f"source folder {src}: cannot copy {rel}: {exc.strerror or exc}") from None
        (tmp / MARKER).write_text(_marker_text(source, None, fingerprint=fingerprint))
    return dest


def _scan_folder(src: Path, options: FetchOptions) -> list[tuple[str, os.stat_result]]:
    """The regular files under ``src`` (relative posix path, stat), refusing what a pallet never holds.

    A symbolic link that resolves outside ``src``, a link to a folder, a device or a FIFO is
    refused; so are more files or bytes than the archive limits allow.
    """
    root = os.path.realpath(src)
    max_bytes = int(options.max_unpacked_bytes or limit("max_unpacked_bytes"))
    max_members = int(limit("max_archive_members"))
    found: list[tuple[str, os.stat_result]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = here / name
            rel = path.relative_to(src).as_posix()
            if rel == MARKER:
                continue
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    if not inside(path, root):
                        raise FetchError(
                            f"source folder {src}: {rel} is a symbolic link to {os.readlink(path)!r}, "
                            "which resolves outside the folder: refused"
                        )
                    st = os.stat(path)
                    if stat.S_ISDIR(st.st_mode):
                        raise FetchError(
                            f"source folder {src}: {rel} is a symbolic link to a folder: refused "
                            "(copy the folder itself)"
                        )
            except OSError as exc:
                raise FetchError(f"source folder {src}: {rel}: {exc.strerror or exc}") from None
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise FetchError(f"source folder {src}: {rel} is a device, FIFO or special file: refused")
            total += st.st_size
            found.append((rel, st))
            if len(found) > max_members or total > max_bytes:
                what = "max_archive_members" if len(found) > max_members else "max_unpacked_bytes"
                raise FetchError(
                    f"source folder {src}: more files or bytes than the limit {what} allows "
                    f"(raise {LIMITS[what].env} to allow it)"
                )
    return found


def _local_archive_sha(source: Source) -> str:
    """sha256 of a local archive after checking its first bytes and its size (max_download_bytes)."""
    path = source.path
    archive_format(path)
    cap = int(limit("max_download_bytes"))
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            size += len(chunk)
            if size > cap:
                raise FetchError(
                    f"source {source.shown!r}: {path} is larger than {cap} bytes (max_download_bytes; "
                    f"raise {LIMITS['max_download_bytes'].env} to allow it)"
                )
            digest.update(chunk)
    return digest.hexdigest()


def fetch_pallet(
    source: str, dest: Path, *, resource: str | None = None, options: FetchOptions | None = None
) -> Path:
    """Make ``dest`` hold the pallet named by ``source`` and return ``dest``.

    Remote archives are downloaded once into the content-addressed cache (verified by
    sha256 on every use) and extracted safely; a local archive is extracted; a local
    folder is copied. Calling it again with the same source is a no-op. ``dest`` is
    replaced only when it is empty or was written by an earlier fetch.
    """
    options = options or FetchOptions()
    src = parse_source(source, resource=resource, doi_url=options.doi_url)
    dest = Path(dest).expanduser().absolute()
    try:
        return _fetch(src, dest, options)
    except OSError as exc:  # a folder we cannot write, a full disk: named, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        raise FetchError(
            f"source {src.shown!r} -> {dest}: {exc.strerror or type(exc).__name__}{where}"
        ) from None


def _fetch(src: Source, dest: Path, options: FetchOptions) -> Path:
    for path in clean_leftovers(dest):
        log.info("removed %s, left by an interrupted fetch", path)
    if src.kind == "folder":
        return _copy_folder(src, dest, options)
    if src.kind == "archive":
        archive, sha256, name = src.path, _local_archive_sha(src), src.path.name
    else:
        entry = fetch_archive(src, options)
        archive, sha256, name = entry.path, entry.sha256, entry.filename
    marker = read_marker(dest)
    if marker and marker.get("sha256") == sha256 and marker.get("key") == src.cache_key():
        log.info("%s: already extracted in %s", src.shown, dest)
        return dest
    _check_dest(dest)
    extract_to(
        archive,
        dest,
        max_bytes=options.max_unpacked_bytes,
        marker=(MARKER, _marker_text(src, sha256, archive=name)),
    )
    return dest
