"""Load and validate a pallet: the background-only workspace and its signal patches.

Also converts a legacy folder of plain RFC 6902 patch files (``patch.<name>.json``, the
point's coordinates written in the name with ``p`` as decimal point) into a pyhf PatchSet.
Files are read size-capped (``limits.max_workspace_bytes``) as strict JSON; every patch is
checked against the workspace (an op on ``/channels/9/...`` of a 3-channel workspace is an
error naming the file and patch), point names follow :mod:`recastfit.names` and point values
are finite and distinct.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pyhf

from recastfit.errors import InputError
from recastfit.fileio import load_json_file
from recastfit.names import check_name
from recastfit.signals.model import MAX_ABS, values_from_name

__all__ = ["load_json", "load_workspace", "load_patchset", "legacy_patchset", "check_patch"]


def load_json(path: Path) -> Any:
    """A workspace or PatchSet JSON file (strict JSON, size-capped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, "file not found")
    return load_json_file(path, limit_name="max_workspace_bytes", what="JSON file")


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


def _pointer(path: object) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ValueError(f"not a JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def _copy_along(doc: Any, parts: list[str]) -> Any:
    """``doc`` with the containers along ``parts`` copied (so a patch may change them in place)."""
    root = copy.copy(doc)
    node = root
    for part in parts[:-1]:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                break
            node[int(part)] = copy.copy(node[int(part)])
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node[part] = copy.copy(node[part])
            node = node[part]
        else:
            break
    return root


def check_patch(bkg_spec: dict, ops: Any, *, file: str, key: str) -> None:
    """Raise :class:`InputError` unless the RFC 6902 ``ops`` apply cleanly to ``bkg_spec``.

    Only the containers an op touches are copied, so this stays cheap on large workspaces.

    >>> ws = {"channels": [{"name": "SR", "samples": []}]}
    >>> check_patch(ws, [{"op": "add", "path": "/channels/0/samples/0", "value": {}}], file="p", key="k")
    >>> try:
    ...     check_patch(ws, [{"op": "remove", "path": "/channels/9/samples/0"}], file="p.json", key="p[0]")
    ... except InputError as exc:
    ...     print(exc)
    p.json: p[0].patch[0]: op 'remove' /channels/9/samples/0 does not apply to the workspace (the \
workspace has 1 channel(s): ['SR']): index '9' is out of bounds
    """
    import jsonpatch
    import jsonpointer

    if not isinstance(ops, list) or not all(isinstance(op, dict) and "op" in op for op in ops):
        raise InputError(file, key, "expected a JSON list of RFC 6902 operations")
    doc: Any = bkg_spec
    for i, op in enumerate(ops):
        try:
            parts = _pointer(op.get("path"))
            doc = _copy_along(doc, parts)
            if "from" in op:
                doc = _copy_along(doc, _pointer(op["from"]))
            doc = jsonpatch.apply_patch(doc, [op], in_place=True)
        except (
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
        ) as exc:
            names = [c.get("name") for c in bkg_spec.get("channels", [])]
            raise InputError(
                file,
                f"{key}.patch[{i}]",
                f"op {op.get('op')!r} {op.get('path')} does not apply to the workspace "
                f"(the workspace has {len(names)} channel(s): {names[:20]}): {str(exc)[:200]}",
            ) from None


def _check_points(patches: list[dict], file: str) -> None:
    """Names valid and distinct, values finite and distinct (pyhf would fail with a traceback)."""
    seen_names: dict[str, int] = {}
    seen_values: dict[tuple, int] = {}
    for i, p in enumerate(patches):
        meta = p.get("metadata", {}) if isinstance(p, dict) else {}
        name = check_name(meta.get("name"), file=file, key=f"patches[{i}].metadata.name")
        values = meta.get("values")
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_ABS
            for v in values
        ):
            raise InputError(
                file, f"patches[{i}].metadata.values", f"expected finite numbers, got {values!r}"
            )
        if name in seen_names:
            raise InputError(
                file, f"patches[{i}]", f"duplicate point name {name!r} (patches[{seen_names[name]}])"
            )
        key = tuple(float(v) for v in values)
        if key in seen_values:
            raise InputError(
                file, f"patches[{i}]", f"duplicate point values {list(key)} (patches[{seen_values[key]}])"
            )
        seen_names[name], seen_values[key] = i, i


def load_patchset(path: Path, bkg_spec: dict) -> dict:
    """Read a pyhf PatchSet, validate it, verify its digest against ``bkg_spec`` and check each patch."""
    spec = load_json(path)
    if isinstance(spec, dict) and isinstance(spec.get("patches"), list):
        _check_points(spec["patches"], str(path))
    try:
        patchset = pyhf.PatchSet(spec)
    except (pyhf.exceptions.InvalidSpecification, pyhf.exceptions.InvalidPatchSet) as exc:
        raise _schema_error(Path(path), exc) from None
    try:
        patchset.verify(bkg_spec)
    except pyhf.exceptions.PatchSetVerificationError as exc:
        raise InputError(
            str(path), "metadata.digests", f"does not match the background workspace: {exc}"
        ) from None
    for i, p in enumerate(spec["patches"]):
        check_patch(bkg_spec, p["patch"], file=str(path), key=f"patches[{i}]")
    return spec


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
        name = check_name(
            file.name.removeprefix("patch.").removesuffix(".json"), file=str(file), key="file name"
        )
        values = values_from_name(name, len(parameters), pattern=pattern, source=str(file))
        ops = load_json(file)
        check_patch(bkg_spec, ops, file=str(file), key="patch")
        patches.append({"metadata": {"name": name, "values": list(values)}, "patch": ops})
    _check_points(patches, str(folder))
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
    except (pyhf.exceptions.InvalidSpecification, pyhf.exceptions.InvalidPatchSet) as exc:
        raise _schema_error(folder, exc) from None
    return spec
