"""Load and validate a pallet: the background-only workspace and its signal patches.

Also converts a legacy folder of plain RFC 6902 patch files (``patch.<name>.json``, the
point's coordinates written in the name with ``p`` as decimal point) into a pyhf PatchSet.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyhf

from recastfit.errors import InputError
from recastfit.signals.model import numbers_in_name

__all__ = ["load_json", "load_workspace", "load_patchset", "legacy_patchset", "values_from_name"]


def load_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, "file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(str(path), None, f"not valid JSON ({exc})") from None


def _schema_error(path: Path, exc: Exception) -> InputError:
    text = str(exc).splitlines()
    path_line = next((ln.strip() for ln in text if ln.strip().startswith("Path:")), "")
    return InputError(str(path), path_line.removeprefix("Path: ") or None, f"invalid: {text[0]}")


def load_workspace(path: Path) -> dict:
    """Read a background workspace and validate it against pyhf's workspace schema."""
    spec = load_json(path)
    try:
        pyhf.Workspace(spec)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise _schema_error(Path(path), exc) from None
    return spec


def load_patchset(path: Path, bkg_spec: dict) -> dict:
    """Read a pyhf PatchSet, validate it and verify its digest against ``bkg_spec``."""
    spec = load_json(path)
    try:
        patchset = pyhf.PatchSet(spec)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise _schema_error(Path(path), exc) from None
    try:
        patchset.verify(bkg_spec)
    except pyhf.exceptions.PatchSetVerificationError as exc:
        raise InputError(
            str(path), "metadata.digests", f"does not match the background workspace: {exc}"
        ) from None
    return spec


def values_from_name(name: str, nparams: int, pattern: str | None = None) -> tuple[float, ...]:
    """Grid coordinates from a point name: ``ERJR_100p0_20p0`` -> (100.0, 20.0).

    ``pattern``: a regex with one group per parameter, used instead of the default rule
    (every number in the name, ``p`` read as the decimal point).
    """
    if pattern:
        match = re.search(pattern, name)
        values = tuple(float(g.replace("p", ".")) for g in match.groups()) if match else ()
    else:
        values = numbers_in_name(name)
    if len(values) != nparams:
        raise ValueError(f"found {len(values)} numbers in '{name}', expected {nparams}")
    return values


def legacy_patchset(
    folder: Path,
    bkg_spec: dict,
    parameters: list[str],
    *,
    pattern: str | None = None,
    analysis_id: str = "legacy",
    hepdata_record: str | None = None,
) -> dict:
    """A pyhf PatchSet spec from a folder of ``patch.<name>.json`` RFC 6902 patch lists."""
    folder = Path(folder)
    files = sorted(folder.glob("patch.*.json"), key=lambda p: p.name)
    if not files:
        raise InputError(str(folder), None, "no patch.<name>.json files in this folder")
    patches = []
    for file in files:
        name = file.name.removeprefix("patch.").removesuffix(".json")
        try:
            values = values_from_name(name, len(parameters), pattern)
        except ValueError as exc:
            raise InputError(str(file), "file name", f"{exc} (grid.parameters = {parameters})") from None
        ops = load_json(file)
        if not isinstance(ops, list) or not all(isinstance(op, dict) and "op" in op for op in ops):
            raise InputError(str(file), None, "expected a JSON list of RFC 6902 operations")
        patches.append({"metadata": {"name": name, "values": list(values)}, "patch": ops})
    spec = {
        "metadata": {
            "name": analysis_id,
            "description": f"converted by recastfit from the legacy patch folder {folder.name}",
            "digests": {"sha256": pyhf.utils.digest(bkg_spec)},
            "labels": list(parameters),
            "references": {"hepdata": hepdata_record or "ins0000000"},
        },
        "patches": patches,
        "version": "1.0.0",
    }
    try:
        pyhf.PatchSet(spec)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise _schema_error(folder, exc) from None
    return spec
