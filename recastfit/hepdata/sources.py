"""Parse the SOURCE of a pallet: DOI, HEPData URL, record, local archive or folder.

>>> parse_source("10.17182/hepdata.90607.v3/r3").kind
'doi'
>>> s = parse_source("https://doi.org/10.17182/hepdata.90607.v3/r3")
>>> (s.recid, s.version, s.resource_index)
(90607, 3, 3)
>>> s = parse_source("ins1755298.v3", resource="1Lbb-likelihoods.tar.gz")
>>> (s.kind, s.inspire_id, s.version, s.resource)
('record', 1755298, 3, '1Lbb-likelihoods.tar.gz')
>>> parse_source("https://www.hepdata.net/record/resource/1408476?view=true").resource_id
1408476
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from recastfit.errors import FetchError
from recastfit.hepdata.redact import redact_text, redact_url

__all__ = ["Source", "parse_source", "local_source_path", "HEPDATA_DOI_PREFIX"]

HEPDATA_DOI_PREFIX = "10.17182/hepdata."

# 10.17182/hepdata.<recid>.v<version>[/r<resource>]  (a bare record DOI has no /rN)
_DOI_RE = re.compile(r"^10\.17182/hepdata\.(?P<recid>\d+)(?:\.v(?P<version>\d+))?(?:/r(?P<res>\d+))?$", re.I)
_DOI_URL_RE = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)(?P<doi>10\..+)$", re.I)
# ins1755298, ins1755298.v3, ins1755298/v3, ins1755298?version=3
_RECORD_RE = re.compile(r"^ins(?P<ins>\d+)(?:(?:\.|/|:)v(?P<version>\d+)|\?version=(?P<qv>\d+))?$", re.I)
_RESOURCE_PATH_RE = re.compile(r"/record/resource/(?P<id>\d+)/?$")
_RECORD_PATH_RE = re.compile(r"/record/(?P<ident>ins\d+|\d+)/?$")


@dataclass(frozen=True)
class Source:
    """One parsed SOURCE.

    ``kind`` is one of ``doi`` (a HEPData resource DOI), ``record`` (a HEPData record, by
    INSPIRE id or HEPData recid, plus the resource's file name), ``resource_url`` (a
    ``/record/resource/<id>`` URL), ``url`` (any other http(s) URL), ``archive`` (a local
    archive) or ``folder`` (a local folder).
    """

    kind: str
    text: str
    doi: str | None = None
    recid: int | None = None
    inspire_id: int | None = None
    version: int | None = None
    resource_index: int | None = None
    resource_id: int | None = None
    resource: str | None = None
    url: str | None = None
    path: Path | None = None

    @property
    def shown(self) -> str:
        """The SOURCE as written, with any secrets in it masked (for messages and records)."""
        return redact_text(self.text)

    def cache_key(self) -> str:
        """A stable key naming this source in the cache, computable without network (no secrets)."""
        if self.kind == "doi":
            return f"doi:{self.doi.lower()}"
        if self.kind == "record":
            ident = f"ins{self.inspire_id}" if self.inspire_id is not None else f"recid{self.recid}"
            version = f"v{self.version}" if self.version is not None else "latest"
            return f"record:{ident}:{version}:{self.resource or '*'}"
        if self.kind == "resource_url":
            parts = urlsplit(redact_url(self.url))
            return f"resource:{parts.scheme}://{parts.netloc}/record/resource/{self.resource_id}"
        if self.kind == "url":
            return f"url:{redact_url(self.url)}"
        return f"local:{self.path}"

    def describe(self) -> str:
        """Short human description used in messages."""
        if self.kind == "record":
            ident = f"ins{self.inspire_id}" if self.inspire_id is not None else f"record {self.recid}"
            version = f" version {self.version}" if self.version is not None else ""
            res = f", resource {self.resource!r}" if self.resource else ""
            return f"HEPData {ident}{version}{res}"
        if self.kind == "doi":
            return f"DOI {self.doi}"
        return self.shown


def _from_doi(doi: str, text: str, resource: str | None) -> Source:
    m = _DOI_RE.match(doi)
    if not m:
        raise FetchError(
            f"source {redact_text(text)!r}: not a HEPData DOI; expected 10.17182/hepdata.<recid>.v<N>/r<M> "
            "(a resource DOI) or 10.17182/hepdata.<recid>.v<N> with a resource file name"
        )
    recid = int(m["recid"])
    version = int(m["version"]) if m["version"] else None
    if m["res"]:
        if version is None:
            raise FetchError(
                f"source {redact_text(text)!r}: a resource DOI needs a version (.vN) before /r{m['res']}"
            )
        return Source("doi", text, doi=doi, recid=recid, version=version, resource_index=int(m["res"]))
    # a record DOI: the record by recid, plus the resource name
    return Source("record", text, recid=recid, version=version, resource=resource)


def _from_url(text: str, resource: str | None, doi_url: str | None) -> Source:
    parts = urlsplit(text)
    path = unquote(parts.path)
    if doi_url:
        base = urlsplit(doi_url.rstrip("/"))
        if (parts.scheme, parts.netloc) == (base.scheme, base.netloc) and path.startswith(base.path + "/"):
            doi = path[len(base.path) + 1 :]
            if doi.lower().startswith(HEPDATA_DOI_PREFIX):
                return _from_doi(doi, text, resource)
    m = _RESOURCE_PATH_RE.search(path)
    if m:
        return Source("resource_url", text, resource_id=int(m["id"]), url=text, resource=resource)
    m = _RECORD_PATH_RE.search(path)
    if m:
        query = parse_qs(parts.query)
        version = int(query["version"][0]) if query.get("version", [""])[0].isdigit() else None
        ident = m["ident"]
        if ident.lower().startswith("ins"):
            ins = int(ident[3:])
            return Source("record", text, inspire_id=ins, version=version, resource=resource, url=text)
        return Source("record", text, recid=int(ident), version=version, resource=resource, url=text)
    return Source("url", text, url=text, resource=resource)


def local_source_path(text: str) -> Path | None:
    """The local path a SOURCE names, whether or not it exists yet; None for a remote source.

    Same precedence as :func:`parse_source` (an existing path wins; ``file://`` URLs are unquoted),
    for callers that must classify a source before it exists, e.g. a workflow input that an earlier
    rule writes.

    >>> local_source_path("file:///data/my%20pallet")
    PosixPath('/data/my pallet')
    >>> [local_source_path(s) for s in ("ins1755298", "doi:10.17182/hepdata.1.v1/r2", "https://x.org/a.tgz")]
    [None, None, None]
    >>> local_source_path("demo/pallet")
    PosixPath('demo/pallet')
    """
    text = str(text).strip()
    if text.lower().startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    if "://" in text:
        return None
    local = Path(text).expanduser()
    if local.exists():
        return local
    # DOIs and record ids (doi.org URLs were caught by "://" above)
    return None if text.lower().startswith(("10.", "doi:", "ins")) else local


def parse_source(text: str, *, resource: str | None = None, doi_url: str | None = None) -> Source:
    """Parse a SOURCE string (see the module doc); raises FetchError naming it when unknown.

    An existing local path always wins over the other forms.
    """
    text = str(text).strip()
    if not text:
        raise FetchError("pallet source is empty: expected a DOI, URL, record id or local path")
    if text.lower().startswith("file://"):
        local = Path(unquote(urlsplit(text).path))
        if not local.exists():
            raise FetchError(f"source {redact_text(text)!r}: local path {local} does not exist")
        return _local(local, text)
    local = Path(text).expanduser()
    if "://" not in text and local.exists():
        return _local(local, text)
    m = _DOI_URL_RE.match(text)
    if m:
        return _from_doi(m["doi"], text, resource)
    if text.lower().startswith(HEPDATA_DOI_PREFIX):
        return _from_doi(text, text, resource)
    m = _RECORD_RE.match(text)
    if m:
        version = m["version"] or m["qv"]
        version = int(version) if version else None
        return Source("record", text, inspire_id=int(m["ins"]), version=version, resource=resource)
    if text.lower().startswith(("http://", "https://")):
        return _from_url(text, resource, doi_url)
    raise FetchError(
        f"source {redact_text(text)!r}: not found as a local path and not a recognised remote source; "
        "expected a HEPData resource DOI (10.17182/hepdata.<recid>.v<N>/r<M>), a https:// URL, a record "
        "(ins<inspire>[.v<N>] with a resource file name), a local archive or folder, or file://PATH"
    )


def _local(path: Path, text: str) -> Source:
    path = path.expanduser().resolve()
    if path.is_dir():
        return Source("folder", text, path=path)
    if not path.is_file():  # a FIFO or a device would block or never end
        raise FetchError(f"source {redact_text(text)!r}: {path} is neither a regular file nor a folder")
    return Source("archive", text, path=path)
