"""SOURCE parsing: every accepted form, its cache key, and clear errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from recastfit.errors import FetchError
from recastfit.hepdata import parse_source

DOI = "10.17182/hepdata.90607.v3/r3"


@pytest.mark.parametrize(
    "text",
    [
        DOI,
        f"https://doi.org/{DOI}",
        f"http://dx.doi.org/{DOI}",
        f"doi:{DOI}",
        "10.17182/HEPDATA.90607.v3/r3",
    ],
)
def test_resource_doi_forms(text):
    src = parse_source(text)
    assert src.kind == "doi"
    assert (src.recid, src.version, src.resource_index) == (90607, 3, 3)
    # the key ignores how the DOI was written, so all forms share one cache entry
    assert src.cache_key() == f"doi:{DOI}"


def test_doi_on_configured_resolver_url():
    src = parse_source(f"http://127.0.0.1:8123/doi/{DOI}", doi_url="http://127.0.0.1:8123/doi")
    assert src.kind == "doi" and src.doi == DOI


def test_record_doi_becomes_record_source():
    src = parse_source("10.17182/hepdata.90607.v3", resource="1Lbb-likelihoods.tar.gz")
    assert (src.kind, src.recid, src.version, src.resource) == ("record", 90607, 3, "1Lbb-likelihoods.tar.gz")


def test_resource_doi_without_version_is_refused():
    with pytest.raises(FetchError, match=r"needs a version"):
        parse_source("10.17182/hepdata.90607/r3")


@pytest.mark.parametrize("query", ["view=true", "landing_page=true", ""])
def test_resource_url(query):
    url = "https://www.hepdata.net/record/resource/1408476" + (f"?{query}" if query else "")
    src = parse_source(url)
    assert (src.kind, src.resource_id) == ("resource_url", 1408476)
    assert src.cache_key() == "resource:https://www.hepdata.net/record/resource/1408476"


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("ins1755298", None),
        ("ins1755298.v3", 3),
        ("ins1755298/v3", 3),
        ("ins1755298?version=3", 3),
        ("INS1755298:v2", 2),
    ],
)
def test_record_forms(text, version):
    src = parse_source(text, resource="pallet.tar.gz")
    assert (src.kind, src.inspire_id, src.version, src.resource) == (
        "record",
        1755298,
        version,
        "pallet.tar.gz",
    )
    expected_version = f"v{version}" if version else "latest"
    assert src.cache_key() == f"record:ins1755298:{expected_version}:pallet.tar.gz"


def test_record_url():
    src = parse_source("https://www.hepdata.net/record/ins1755298?version=3", resource="a.tar.gz")
    assert (src.kind, src.inspire_id, src.version, src.url) == (
        "record",
        1755298,
        3,
        "https://www.hepdata.net/record/ins1755298?version=3",
    )


def test_other_url_is_generic():
    src = parse_source("https://example.org/mirror/pallet.tar.gz")
    assert (src.kind, src.url) == ("url", "https://example.org/mirror/pallet.tar.gz")


def test_local_archive_folder_and_file_url(tmp_path):
    archive = tmp_path / "p.tar.gz"
    archive.write_bytes(b"x")
    assert parse_source(str(archive)).kind == "archive"
    assert parse_source(str(tmp_path)).kind == "folder"
    src = parse_source(archive.as_uri())
    assert (src.kind, src.path) == ("archive", archive.resolve())
    assert parse_source(tmp_path.as_uri()).kind == "folder"


def test_local_path_wins_over_record_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ins1755298").mkdir()
    assert parse_source("ins1755298").kind == "folder"


def test_missing_file_url_names_the_path(tmp_path):
    with pytest.raises(FetchError, match="does not exist"):
        parse_source((tmp_path / "nope.tar.gz").as_uri())


@pytest.mark.parametrize("text", ["no-such-thing.tar.gz", "10.1000/other.doi", "ftp://x/y"])
def test_unrecognised_source_names_it(text):
    with pytest.raises(FetchError) as err:
        parse_source(text)
    assert repr(text) in str(err.value)


def test_empty_source():
    with pytest.raises(FetchError, match="empty"):
        parse_source("  ")
