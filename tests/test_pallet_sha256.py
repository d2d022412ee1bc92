"""`pallet.sha256` pins the archive: a different archive stops the fetch step, naming the key."""

from __future__ import annotations

import hashlib
import tarfile

import pytest

from recastfit import demo
from recastfit.config import parse_config
from recastfit.errors import ConfigError
from recastfit.pipeline import fetch_step


def _config(archive, sha: str) -> object:
    return parse_config(
        {
            "analysis": "demo",
            "pallet": {"source": str(archive), "sha256": sha},
            "signal": {"type": "yields", "path": "y.json"},
            "grid": {"parameters": ["m_parent", "m_LSP"]},
        },
        "my.yaml",
    )


def test_sha256_pins_the_archive(tmp_path) -> None:
    paths = demo.write_demo(tmp_path / "d", grid="small")
    archive = tmp_path / "pallet.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(paths["workspace"], arcname="pallet/BkgOnly.json")
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = tmp_path / "out"
    manifest = fetch_step(_config(archive, good), out / "pallet", out / "pallet.json")
    assert manifest["sha256"] == good and manifest["selected"]["workspace"].endswith("BkgOnly.json")
    with pytest.raises(ConfigError, match=r"my.yaml: key 'pallet.sha256'"):
        fetch_step(_config(archive, "0" * 64), tmp_path / "o2" / "pallet", tmp_path / "o2" / "pallet.json")
    assert not (tmp_path / "o2" / "pallet.json").exists()
