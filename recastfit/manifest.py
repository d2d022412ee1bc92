"""The pallet manifest: what `recastfit fetch` found, read back by the later workflow steps.

One JSON file (``pallet.json`` in a workflow's results folder)::

    {"source": ..., "sha256": ..., "folder": ..., "analyses": [...], "selected": {...}}

``source`` has any secret in a URL masked; ``selected`` names the chosen analysis's
``workspace``, ``patchset`` and ``patch_dir`` (absolute paths, None where absent), each inside
``folder`` — :func:`read_manifest` checks that, so an edited manifest cannot point the fit at a
file elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recastfit.errors import InputError
from recastfit.fileio import inside, load_json_file, write_json_atomic
from recastfit.hepdata import discover, read_marker, select
from recastfit.hepdata.redact import redact_text

__all__ = ["write_manifest", "read_manifest", "PATH_KEYS"]

PATH_KEYS = ("workspace", "patchset", "patch_dir")


def write_manifest(path: Path | str, source: str, folder: Path | str, analysis: str | None) -> dict[str, Any]:
    """Discover (and validate) the analyses in ``folder``, select ``analysis``, write the manifest.

    Written atomically; returns the manifest. FetchError / InputError when nothing or several
    analyses match, or a workspace does not validate.
    """
    folder = Path(folder).absolute()
    found = discover(folder)
    selected = select(found, analysis)
    marker = read_marker(folder) or {}
    manifest = {
        "source": redact_text(source),
        "sha256": marker.get("sha256"),
        "folder": str(folder),
        "analyses": [a.to_dict() for a in found],
        "selected": selected.to_dict(),
    }
    write_json_atomic(path, manifest, indent=2)
    return manifest


def read_manifest(path: Path | str) -> dict[str, Any]:
    """The manifest at ``path``; InputError naming the file and key when it is unusable.

    ``selected.workspace`` must be present, and every path in ``selected`` must lie inside
    ``folder`` (after resolving links).
    """
    manifest = load_json_file(path, limit_name="max_config_bytes", what="pallet manifest")
    selected = manifest.get("selected") if isinstance(manifest, dict) else None
    if not isinstance(selected, dict) or not selected.get("workspace"):
        raise InputError(str(path), "selected.workspace", "missing: re-run the fetch step")
    folder = manifest.get("folder")
    if not isinstance(folder, str) or not folder:
        raise InputError(str(path), "folder", "missing: re-run the fetch step")
    for key in PATH_KEYS:
        value = selected.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not inside(value, folder):
            raise InputError(
                str(path), f"selected.{key}", f"{value!r} does not lie inside the pallet folder {folder}"
            )
    return manifest
