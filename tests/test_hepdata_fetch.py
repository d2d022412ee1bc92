"""fetch_pallet against a real local HEPData-shaped server: every SOURCE form, cache, faults."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from recastfit.cli import main
from recastfit.errors import FetchError
from recastfit.hepdata import Cache, FetchOptions, discover, fetch_pallet, read_marker, sha256_file
from tests.hepdata_server import HEPDataServer, make_tar_gz, make_zip


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """Pallet archives built from the shared pallets (tar.gz, zip and an oddly named tar.gz)."""
    from tests.conftest import ERJR_DIR, STAU_DIR, need_shared

    need_shared(ERJR_DIR)
    need_shared(STAU_DIR)
    out = tmp_path_factory.mktemp("archives")
    erjr = make_tar_gz(out / "erjr.tar.gz", {"3L-eRJR": ERJR_DIR})
    stau = make_zip(out / "stau.zip", {"BkgOnly.json": STAU_DIR / "BkgOnly.json"})
    odd = out / "erjr-pallet.bin"  # no archive suffix: its mimetype is not an archive type
    odd.write_bytes(erjr.read_bytes())
    readme = out / "README.txt"
    readme.write_text("not a pallet")
    traversal = out / "evil.tar.gz"
    with tarfile.open(traversal, "w:gz") as tar:
        tar.add(ERJR_DIR / "BkgOnly.json", arcname="BkgOnly.json")
        tar.add(ERJR_DIR / "BkgOnly.json", arcname="../evil.json")
    return {
        "erjr.tar.gz": erjr,
        "stau.zip": stau,
        "erjr-pallet.bin": odd,
        "README.txt": readme,
        "evil.tar.gz": traversal,
    }


@pytest.fixture
def srv(tmp_path, archives):
    pallets = {k: archives[k] for k in ("erjr.tar.gz", "stau.zip", "erjr-pallet.bin", "evil.tar.gz")}
    with HEPDataServer(tmp_path, pallets=pallets, extra={"README.txt": archives["README.txt"]}) as server:
        yield server


def opts(srv: HEPDataServer, tmp_path: Path, **kw) -> FetchOptions:
    base = dict(
        hepdata_url=srv.url,
        doi_url=srv.doi_url,
        cache_dir=tmp_path / "cache",
        quiet=True,
        backoff=0.01,
        timeout=5.0,
        retries=3,
    )
    return FetchOptions(**{**base, **kw})


def assert_erjr(folder: Path) -> None:
    (found,) = discover(folder, validate=False)
    assert found.name == "3L-eRJR"
    assert found.workspace == folder / "3L-eRJR" / "BkgOnly.json"
    assert len(list(found.patch_dir.glob("patch.*.json"))) == 66


def assert_stau(folder: Path) -> None:
    (found,) = discover(folder, validate=False)
    assert (found.workspace, found.patchset, found.patch_dir) == (folder / "BkgOnly.json", None, None)


def no_partial_files(tmp_path: Path) -> None:
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".part") or ".extract-" in p.name]
    assert leftovers == []


# -- every SOURCE form ------------------------------------------------------------------------------
def test_doi_uses_landing_page_with_accept_header(srv, tmp_path):
    dest = fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=opts(srv, tmp_path))
    assert_erjr(dest)
    (path, headers) = next(r for r in srv.requests if "landing_page=true" in r[0])
    assert "application/x-tar" in headers["Accept"]
    assert srv.count("?view=true") == 0  # the landing page handed the file over itself
    assert srv.count("/doi/10.17182/hepdata.90607.v1/r1") == 1
    marker = read_marker(dest)
    assert marker["sha256"] == sha256_file(srv.resource("erjr.tar.gz").path)


@pytest.mark.parametrize("form", ["https://doi.org/{doi}", "doi:{doi}", "{doi_url}/{doi}"])
def test_doi_forms_and_zip(srv, tmp_path, form):
    source = form.format(doi=srv.doi("stau.zip"), doi_url=srv.doi_url)
    assert_stau(fetch_pallet(source, tmp_path / "p", options=opts(srv, tmp_path)))


def test_landing_page_406_falls_back_to_view(srv, tmp_path):
    dest = fetch_pallet(srv.doi("erjr-pallet.bin"), tmp_path / "p", options=opts(srv, tmp_path))
    assert_erjr(dest)
    assert srv.count("landing_page=true") == 1 and srv.count("?view=true") == 1


@pytest.mark.parametrize("query", ["view=true", "landing_page=true"])
def test_resource_url(srv, tmp_path, query):
    url = srv.resource_url("erjr.tar.gz", query)
    assert_erjr(fetch_pallet(url, tmp_path / "p", options=opts(srv, tmp_path)))


def test_public_resource_url_goes_to_configured_mirror(srv, tmp_path):
    rid = srv.resource("stau.zip").id
    url = f"https://www.hepdata.net/record/resource/{rid}?view=true"
    assert_stau(fetch_pallet(url, tmp_path / "p", options=opts(srv, tmp_path)))
    assert srv.count(f"/record/resource/{rid}?view=true") == 1


@pytest.mark.parametrize(
    "source", ["ins1755298", "ins1755298.v1", "10.17182/hepdata.90607.v1", "{url}/record/90607"]
)
def test_record_plus_resource_name(srv, tmp_path, source):
    source = source.format(url=srv.url)
    assert_stau(fetch_pallet(source, tmp_path / "p", resource="stau.zip", options=opts(srv, tmp_path)))
    assert srv.count("/record/resources/90607/1") == 1


def test_record_needs_resource_when_several(srv, tmp_path):
    with pytest.raises(FetchError) as err:
        fetch_pallet("ins1755298", tmp_path / "p", options=opts(srv, tmp_path))
    msg = str(err.value)
    assert "4 HistFactory resources" in msg and "'erjr.tar.gz'" in msg and "'stau.zip'" in msg
    assert "README" not in msg
    with pytest.raises(FetchError, match=r"no resource named 'nope.tar.gz'.*'stau.zip'"):
        fetch_pallet("ins1755298", tmp_path / "p", resource="nope.tar.gz", options=opts(srv, tmp_path))


def test_record_by_resource_id_and_doi_suffix(srv, tmp_path):
    rid = str(srv.resource("stau.zip").id)
    assert_stau(fetch_pallet("ins1755298", tmp_path / "a", resource=rid, options=opts(srv, tmp_path)))
    assert_stau(fetch_pallet("ins1755298", tmp_path / "b", resource="r2", options=opts(srv, tmp_path)))


def test_local_archive_folder_and_file_url(archives, tmp_path, erjr_dir):
    o = FetchOptions(cache_dir=tmp_path / "cache", quiet=True)
    assert_erjr(fetch_pallet(str(archives["erjr.tar.gz"]), tmp_path / "a", options=o))
    assert_stau(fetch_pallet(archives["stau.zip"].as_uri(), tmp_path / "b", options=o))
    copied = fetch_pallet(str(erjr_dir), tmp_path / "c", options=o)
    (found,) = discover(copied, validate=False)
    assert found.patch_dir == copied / "patches" and len(list(copied.glob("patches/*.json"))) == 66
    assert read_marker(copied)["sha256"] is None
    assert fetch_pallet(erjr_dir.as_uri(), tmp_path / "c", options=o) == copied  # idempotent
    assert not (tmp_path / "cache").exists()  # local sources never touch the network cache


# -- cache and offline ---------------------------------------------------------------------------
def test_second_fetch_is_served_from_cache_with_server_stopped(srv, tmp_path):
    o = opts(srv, tmp_path)
    first = fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=o)
    marker_time = (first / ".recastfit-fetch.json").stat().st_mtime_ns
    n = len(srv.requests)
    assert fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=o) == first  # idempotent
    assert (first / ".recastfit-fetch.json").stat().st_mtime_ns == marker_time
    assert len(srv.requests) == n
    srv.stop()
    # same DOI written differently, new destination: still no network
    assert_erjr(fetch_pallet(f"https://doi.org/{srv.doi('erjr.tar.gz')}", tmp_path / "q", options=o))
    assert_erjr(
        fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "r", options=opts(srv, tmp_path, offline=True))
    )


def test_offline_says_what_is_missing(srv, tmp_path):
    o = opts(srv, tmp_path, offline=True)
    with pytest.raises(FetchError) as err:
        fetch_pallet(srv.doi("stau.zip"), tmp_path / "p", options=o)
    msg = str(err.value)
    assert "offline" in msg and srv.doi("stau.zip") in msg and str(tmp_path / "cache") in msg
    assert srv.requests == []
    assert not (tmp_path / "p").exists()


def test_corrupted_cache_is_detected_and_refetched(srv, tmp_path):
    o = opts(srv, tmp_path)
    fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=o)
    sha = sha256_file(srv.resource("erjr.tar.gz").path)
    blob = Cache(tmp_path / "cache").blob_path(sha)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    n = srv.count("landing_page=true")
    assert_erjr(fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "q", options=o))
    assert srv.count("landing_page=true") == n + 1
    assert sha256_file(blob) == sha
    # offline, a corrupted entry is a miss, not a silently wrong pallet
    blob.write_bytes(b"garbage")
    with pytest.raises(FetchError, match="offline"):
        fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "r", options=opts(srv, tmp_path, offline=True))


# -- injected faults ----------------------------------------------------------------------------
def test_500_then_success_is_retried(srv, tmp_path):
    srv.fail(500, times=2)
    srv.fail(503, times=1, match="/record/resources/")
    assert_erjr(fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=opts(srv, tmp_path)))
    assert srv.count("landing_page=true") == 3
    assert_stau(fetch_pallet("ins1755298", tmp_path / "q", resource="stau.zip", options=opts(srv, tmp_path)))
    assert srv.count("/record/resources/") == 2


def test_persistent_500_fails_after_retries(srv, tmp_path):
    srv.fail(500, times=10)
    with pytest.raises(FetchError, match=r"failed after 3 attempts: HTTP 500"):
        fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=opts(srv, tmp_path, retries=2))
    assert srv.count("landing_page=true") == 3
    assert not (tmp_path / "p").exists()
    no_partial_files(tmp_path)


def test_reset_mid_body_is_retried_without_partial_file(srv, tmp_path):
    srv.reset(times=1)
    assert_erjr(fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=opts(srv, tmp_path)))
    assert srv.count("landing_page=true") == 2
    no_partial_files(tmp_path)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_reset_without_retries_leaves_nothing(srv, tmp_path):
    srv.reset(times=1)
    with pytest.raises(FetchError, match="failed after 1 attempt: "):
        fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=opts(srv, tmp_path, retries=0))
    assert not (tmp_path / "p").exists()
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert not (tmp_path / "cache" / "blobs").exists()
    no_partial_files(tmp_path)


def test_stalled_server_times_out_and_is_retried(srv, tmp_path):
    srv.stall(2.0, times=1)
    o = opts(srv, tmp_path, timeout=0.3)
    assert_stau(fetch_pallet(srv.doi("stau.zip"), tmp_path / "p", options=o))
    assert srv.count("landing_page=true") == 2


def test_404_names_the_source(srv, tmp_path):
    doi = "10.17182/hepdata.90607.v1/r99"
    with pytest.raises(FetchError) as err:
        fetch_pallet(doi, tmp_path / "p", options=opts(srv, tmp_path))
    assert doi in str(err.value) and "404" in str(err.value)
    assert srv.count("/doi/") == 1  # a 404 is not retried
    with pytest.raises(FetchError, match=r"'ins9999999'.*404"):
        fetch_pallet("ins9999999", tmp_path / "p", resource="x", options=opts(srv, tmp_path))


def test_malicious_archive_from_server_is_refused(srv, tmp_path):
    with pytest.raises(FetchError, match=r"'\.\.' path component"):
        fetch_pallet(srv.doi("evil.tar.gz"), tmp_path / "out" / "p", options=opts(srv, tmp_path))
    assert not (tmp_path / "out" / "p").exists() and not (tmp_path / "evil.json").exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_dest_not_ours_is_not_overwritten(srv, tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    with pytest.raises(FetchError, match="was not written by recastfit fetch"):
        fetch_pallet(srv.doi("stau.zip"), dest, options=opts(srv, tmp_path))
    assert (dest / "precious.txt").read_text() == "keep me"


def test_new_source_replaces_earlier_fetch(srv, tmp_path):
    o = opts(srv, tmp_path)
    dest = fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=o)
    fetch_pallet(srv.doi("stau.zip"), dest, options=o)
    assert_stau(dest)
    assert not (dest / "3L-eRJR").exists()


# -- CLI --------------------------------------------------------------------------------------------
def cli_args(srv: HEPDataServer, tmp_path: Path) -> list[str]:
    return ["--hepdata-url", srv.url, "--doi-url", srv.doi_url, "--cache-dir", str(tmp_path / "cache")]


def test_cli_manifest_and_list(srv, tmp_path, capsys):
    manifest = tmp_path / "m" / "pallet.json"
    dest = tmp_path / "p"
    argv = ["--quiet", "fetch", srv.doi("erjr.tar.gz"), "--dest", str(dest), "--manifest", str(manifest)]
    assert main([*argv, "--list", *cli_args(srv, tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3L-eRJR\t") and str(dest / "3L-eRJR" / "patches") in out
    m = json.loads(manifest.read_text())
    analysis = {
        "name": "3L-eRJR",
        "workspace": str(dest / "3L-eRJR" / "BkgOnly.json"),
        "patchset": None,
        "patch_dir": str(dest / "3L-eRJR" / "patches"),
    }
    assert m == {
        "source": srv.doi("erjr.tar.gz"),
        "sha256": sha256_file(srv.resource("erjr.tar.gz").path),
        "folder": str(dest),
        "analyses": [analysis],
        "selected": analysis,
    }


def test_cli_offline_error_and_unknown_analysis(srv, tmp_path, capsys):
    argv = [
        "fetch",
        srv.doi("stau.zip"),
        "--dest",
        str(tmp_path / "p"),
        "--offline",
        *cli_args(srv, tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "recastfit fetch: error: offline" in err and srv.doi("stau.zip") in err
    argv = ["fetch", srv.doi("stau.zip"), "--dest", str(tmp_path / "p"), "--analysis", "nope"]
    assert main([*argv, *cli_args(srv, tmp_path)]) == 2
    assert "analysis 'nope' not found" in capsys.readouterr().err


def test_cli_env_base_urls(srv, tmp_path, monkeypatch):
    monkeypatch.setenv("RECASTFIT_HEPDATA_URL", srv.url)
    monkeypatch.setenv("RECASTFIT_DOI_URL", srv.doi_url)
    monkeypatch.setenv("RECASTFIT_CACHE_DIR", str(tmp_path / "envcache"))
    assert (
        main(["--quiet", "fetch", "ins1755298", "--resource", "stau.zip", "--dest", str(tmp_path / "p")]) == 0
    )
    assert_stau(tmp_path / "p")
    assert list((tmp_path / "envcache" / "blobs").rglob("*"))


def test_progress_on_stderr_unless_quiet(srv, tmp_path, capsys):
    """One progress implementation (recastfit.progress) draws the byte count of the download."""
    fetch_pallet(srv.doi("erjr.tar.gz"), tmp_path / "p", options=opts(srv, tmp_path, quiet=False))
    err = capsys.readouterr().err
    size = srv.resource("erjr.tar.gz").path.stat().st_size
    assert "fetching erjr.tar.gz: " in err and "(100%)" in err and f"{size / 1024:.1f} KiB" in err
    fetch_pallet(srv.doi("stau.zip"), tmp_path / "q", options=opts(srv, tmp_path, quiet=True))
    assert "fetching" not in capsys.readouterr().err


def test_api_answer_cut_short_is_retried(tmp_path):
    """A JSON answer that breaks off mid-body is asked for again (status retries are urllib3's)."""
    from tests.hepdata_server import ScriptedServer

    record = json.dumps({"recid": 5, "version": 1, "padding": "x" * 5000}).encode()
    calls = {"n": 0}

    def flaky(h):
        calls["n"] += 1
        if calls["n"] == 1:  # announce it all, send half, hang up
            h.respond(200, record[: len(record) // 2], ctype="application/json", length=len(record))
        else:
            h.respond(200, record, ctype="application/json")

    with ScriptedServer({"/record/ins7": flaky, "/record/resources/5/1": lambda h: h.respond(404)}) as srv:
        o = FetchOptions(hepdata_url=srv.url, cache_dir=tmp_path / "c", quiet=True, backoff=0.01, retries=2)
        with pytest.raises(FetchError, match=r"not found \(HTTP 404\) at .*/record/resources/5/1"):
            fetch_pallet("ins7", tmp_path / "p", resource="x", options=o)
    assert calls["n"] == 2
