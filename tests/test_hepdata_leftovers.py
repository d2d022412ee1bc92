"""After ``kill -9`` mid-download or mid-extraction, the next fetch removes what was left behind;
secrets in a source URL reach no file; the manifest module reads back only what lies in the pallet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recastfit.errors import FetchError, InputError
from recastfit.hepdata import FetchOptions, fetch_pallet
from recastfit.hepdata.extract import staged_dir
from recastfit.manifest import read_manifest, write_manifest
from tests.hepdata_server import ScriptedServer, make_zip, serve, trickle_body
from tests.hostile import SECRET_WORKSPACE

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = SECRET_WORKSPACE.replace("SECRET", "OK").encode()


def _pallet_zip(tmp_path: Path, n: int = 6) -> Path:
    files = {"BkgOnly.json": WORKSPACE, **{f"extra/f{i}.txt": os.urandom(1000) for i in range(n)}}
    return make_zip(tmp_path / "pallet.zip", files)


def _opts(tmp_path: Path, srv: ScriptedServer | None = None) -> FetchOptions:
    kw = {"hepdata_url": srv.url} if srv else {}
    return FetchOptions(cache_dir=tmp_path / "cache", quiet=True, backoff=0.01, retries=1, timeout=5, **kw)


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT)


def test_kill9_mid_download_leaves_a_part_file_that_the_next_run_removes(tmp_path):
    archive = _pallet_zip(tmp_path)
    with ScriptedServer({"/slow.zip": trickle_body(b"PK\x03\x04", per_second=50, length=10_000)}) as srv:
        srv.routes["/good.zip"] = serve(archive.read_bytes(), ctype="application/zip")
        proc = _python(
            f"""
            from recastfit.cli import main
            main(["--quiet", "fetch", "{srv.url}/slow.zip", "--dest", "{tmp_path / "p"}",
                  "--cache-dir", "{tmp_path / "cache"}"])
            """
        )
        tmp = tmp_path / "cache" / "tmp"
        deadline = time.monotonic() + 20
        while not list(tmp.glob("download-*.part")) and time.monotonic() < deadline:
            time.sleep(0.05)
        parts = list(tmp.glob("download-*.part"))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert len(parts) == 1 and parts[0].exists()  # what kill -9 leaves behind

        # a live download elsewhere (a second fetch sharing the cache) holds its lock: kept
        import fcntl

        live = tmp / "download-live.part"
        fd = os.open(live, os.O_CREAT | os.O_WRONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            dest = fetch_pallet(f"{srv.url}/good.zip", tmp_path / "p", options=_opts(tmp_path, srv))
            assert sorted(p.name for p in tmp.iterdir()) == ["download-live.part"]
        finally:
            os.close(fd)
        assert (dest / "BkgOnly.json").read_bytes() == WORKSPACE


def test_kill9_mid_extraction_leaves_a_folder_that_the_next_run_removes(tmp_path):
    archive = _pallet_zip(tmp_path)
    dest = tmp_path / "out" / "p"
    proc = _python(
        f"""
        import os, signal
        from recastfit.hepdata import extract, fetch_pallet, FetchOptions
        real, n = extract._zip_write, [0]
        def dying(*args, **kw):
            n[0] += 1
            if n[0] == 4:
                os.kill(os.getpid(), signal.SIGKILL)  # kill -9 half-way through the members
            return real(*args, **kw)
        extract._zip_write = dying
        fetch_pallet("{archive}", __import__("pathlib").Path("{dest}"), options=FetchOptions(quiet=True))
        """
    )
    assert proc.wait(60) == -signal.SIGKILL
    left = sorted(p.name for p in dest.parent.iterdir())
    assert len(left) == 1 and left[0].startswith(".p.extract-")
    assert len(list((dest.parent / left[0]).rglob("*.txt"))) >= 2  # it got half-way

    # a folder some live fetch is still filling is locked: the next run leaves it alone
    with staged_dir(tmp_path / "out" / "q", "extract") as busy:
        fetch_pallet(str(archive), dest, options=FetchOptions(quiet=True))
        assert busy.exists()
        assert sorted(p.name for p in dest.parent.iterdir() if p != busy) == ["p"]
    assert (dest / "BkgOnly.json").read_bytes() == WORKSPACE


def test_secrets_in_the_url_reach_no_file_and_no_message(tmp_path, capsys):
    archive = _pallet_zip(tmp_path)
    with ScriptedServer({"/p.zip": serve(archive.read_bytes(), ctype="application/zip")}) as srv:
        host = srv.url.removeprefix("http://")
        url = f"http://me:S3CR3T@{host}/p.zip?access_token=S3CR3T&version=2"
        folder = fetch_pallet(url, tmp_path / "p", options=_opts(tmp_path, srv))
        manifest = write_manifest(tmp_path / "pallet.json", url, folder, None)
        assert manifest["source"] == f"http://me:***@{host}/p.zip?access_token=***&version=2"
        missing = url.replace("/p.zip", "/nope.zip")
        with pytest.raises(FetchError) as err:
            fetch_pallet(missing, tmp_path / "q", options=_opts(tmp_path, srv))
    assert "404" in str(err.value) and "S3CR3T" not in str(err.value)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".zip"]
    assert any(p.name == "pallet.json" for p in written) and any(p.parent.name == "index" for p in written)
    assert [p for p in written if b"S3CR3T" in p.read_bytes()] == []
    assert "S3CR3T" not in capsys.readouterr().err


def test_read_manifest_refuses_paths_outside_the_pallet(tmp_path):
    folder = tmp_path / "pallet"
    folder.mkdir()
    (folder / "BkgOnly.json").write_bytes(WORKSPACE)
    written = write_manifest(tmp_path / "m.json", str(folder), folder, None)
    assert read_manifest(tmp_path / "m.json") == written
    assert written["selected"]["workspace"] == str(folder / "BkgOnly.json")
    edited = {**written, "selected": {**written["selected"], "workspace": str(tmp_path / "elsewhere.json")}}
    (tmp_path / "bad.json").write_text(json.dumps(edited))
    with pytest.raises(InputError, match=r"bad.json: selected.workspace: .* does not lie inside"):
        read_manifest(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text('{"selected": {"workspace": NaN}}')
    with pytest.raises(InputError, match="nan.json: not valid JSON"):
        read_manifest(tmp_path / "nan.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(InputError, match="selected.workspace"):
        read_manifest(tmp_path / "empty.json")


def test_unwritable_destination_and_cache_are_named_errors(tmp_path):
    archive = _pallet_zip(tmp_path)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(FetchError, match=r"-> .*file.txt/p: (File exists|Not a directory)"):
        fetch_pallet(str(archive), blocker / "p", options=FetchOptions(quiet=True))
    with ScriptedServer({"/p.zip": serve(archive.read_bytes(), ctype="application/zip")}) as srv:
        o = FetchOptions(cache_dir=blocker / "cache", quiet=True)
        with pytest.raises(FetchError, match="File exists|Not a directory"):
            fetch_pallet(f"{srv.url}/p.zip", tmp_path / "q", options=o)
    assert blocker.read_text() == "a file, not a folder"
