"""HTTPS through the watched connection pools: a real TLS server (self-signed certificate made with
the ``openssl`` command), a good download, and the watchdog ending a stalled TLS handshake."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from recastfit.errors import FetchError
from recastfit.hepdata import FetchOptions, fetch_pallet
from tests.hepdata_server import ScriptedServer, make_zip, serve, trickle_body
from tests.hostile import SECRET_WORKSPACE

WORKSPACE = SECRET_WORKSPACE.replace("SECRET", "OK").encode()


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    cmd += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return crt, key


def _opts(tmp_path: Path) -> FetchOptions:
    return FetchOptions(cache_dir=tmp_path / "cache", quiet=True, backoff=0.01, retries=1, timeout=30)


def test_https_download_and_trickle(cert, tmp_path, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert[0]))
    archive = make_zip(tmp_path / "p.zip", {"BkgOnly.json": WORKSPACE})
    routes = {
        "/p.zip": serve(archive.read_bytes(), ctype="application/zip"),
        "/slow": trickle_body(b"PK\x03\x04"),
    }
    with ScriptedServer(routes, tls=cert) as srv:
        assert srv.url.startswith("https://")
        dest = fetch_pallet(f"{srv.url}/p.zip", tmp_path / "p", options=_opts(tmp_path))
        assert (dest / "BkgOnly.json").read_bytes() == WORKSPACE
        monkeypatch.setenv("RECASTFIT_DOWNLOAD_DEADLINE", "1.5")
        t0 = time.monotonic()
        with pytest.raises(FetchError, match="not finished within 1.5 s"):
            fetch_pallet(f"{srv.url}/slow", tmp_path / "q", options=_opts(tmp_path))
        assert time.monotonic() - t0 < 5


def test_untrusted_certificate_is_a_named_error(cert, tmp_path):
    archive = make_zip(tmp_path / "p.zip", {"BkgOnly.json": WORKSPACE})
    with ScriptedServer({"/p.zip": serve(archive.read_bytes(), ctype="application/zip")}, tls=cert) as srv:
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            fetch_pallet(f"{srv.url}/p.zip", tmp_path / "p", options=_opts(tmp_path))


def test_stalled_tls_handshake_ends_at_the_deadline(tmp_path, monkeypatch):
    """A server that accepts the connection and never answers the TLS hello: the socket is watched
    from its creation, so the deadline ends it although the 30 s read timeout has not passed."""
    monkeypatch.setenv("RECASTFIT_DOWNLOAD_DEADLINE", "1.5")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/p.zip"
        with pytest.raises(FetchError, match="not finished within 1.5 s"):
            fetch_pallet(url, tmp_path / "p", options=_opts(tmp_path))
        assert time.monotonic() - t0 < 5
    finally:
        stop.set()
        thread.join(2)
        for s in held:
            s.close()
        listener.close()
