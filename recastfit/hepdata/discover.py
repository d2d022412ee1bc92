"""Find the analyses inside an extracted pallet and validate them with pyhf's schemas.

Recognised layouts (in any sub-folder):

* ``BkgOnly.json`` + ``patchset.json``
* prefixed pairs: ``Rpc2L0b_BkgOnly.json`` + ``Rpc2L0b_patchset.json``
* legacy patch folders: ``BkgOnly.json`` + ``patches/patch.<point>.json`` (RFC 6902 lists)
* a lone ``BkgOnly.json`` (signals come from elsewhere, e.g. efficiency maps)

Each analysis is named by its prefix and/or its sub-folder (``Region-combined``,
``Rpc2L0b``, ``sub/Rpc2L0b``); a pallet at the top level takes the folder's name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from recastfit.errors import FetchError, InputError
from recastfit.fileio import load_json_file

__all__ = ["FoundAnalysis", "discover", "select", "validate_analysis"]

_BKG_RE = re.compile(r"^(?P<prefix>.*?)[_\-.]?bkgonly\.json$", re.I)
_SKIP_DIRS = {"__MACOSX", ".git"}


@dataclass(frozen=True)
class FoundAnalysis:
    """One background-only workspace and where its signal patches are (if anywhere)."""

    name: str
    workspace: Path
    patchset: Path | None
    patch_dir: Path | None

    def to_dict(self) -> dict:
        """JSON-ready form with absolute paths as strings (None where absent)."""
        return {
            "name": self.name,
            "workspace": str(self.workspace.absolute()),
            "patchset": str(self.patchset.absolute()) if self.patchset else None,
            "patch_dir": str(self.patch_dir.absolute()) if self.patch_dir else None,
        }


def _patchset_for(folder: Path, prefix: str, files: list[str], n_bkg: int) -> Path | None:
    lower = {f.lower(): f for f in files}
    candidates = [f"{prefix}_patchset.json", f"{prefix}-patchset.json", f"{prefix}patchset.json"]
    if not prefix:
        candidates = ["patchset.json"]
    for cand in candidates:
        if cand.lower() in lower:
            return folder / lower[cand.lower()]
    if n_bkg == 1:
        # one workspace in this folder and exactly one other patchset file: they belong together
        others = [f for f in files if "patchset" in f.lower() and f.lower().endswith(".json")]
        if len(others) == 1:
            return folder / others[0]
    return None


def _patch_dir_for(folder: Path) -> Path | None:
    for name in ("patches", "Patches"):
        pdir = folder / name
        if pdir.is_dir() and any(pdir.glob("patch*.json")):
            return pdir
    return None


def _name(root: Path, folder: Path, prefix: str) -> str:
    rel = folder.relative_to(root).as_posix()
    if rel == ".":
        return prefix or root.name
    return f"{rel}/{prefix}" if prefix else rel


def discover(folder: Path, *, validate: bool = True) -> list[FoundAnalysis]:
    """All analyses under ``folder`` sorted by name; each validated unless ``validate=False``.

    Raises InputError naming the file when a workspace or patchset does not validate.
    """
    root = Path(folder).absolute()
    if not root.is_dir():
        raise FetchError(f"{root}: pallet folder does not exist")
    found: list[FoundAnalysis] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        here = Path(dirpath)
        bkgs = sorted(f for f in filenames if _BKG_RE.match(f) and not f.startswith("._"))
        for bkg in bkgs:
            prefix = _BKG_RE.match(bkg)["prefix"]
            patchset = _patchset_for(here, prefix, filenames, len(bkgs))
            patch_dir = None if patchset else _patch_dir_for(here)
            found.append(FoundAnalysis(_name(root, here, prefix), here / bkg, patchset, patch_dir))
        if not bkgs and "globalInfo.txt" in filenames:  # SModelS folder: the workspaces it declares
            found += _smodels_analyses(root, here, set(bkgs))
    found.sort(key=lambda a: a.name)
    names = [a.name for a in found]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise FetchError(f"{root}: several analyses share the name(s) {sorted(dupes)}")
    if validate:
        for analysis in found:
            validate_analysis(analysis)
    return found


def _smodels_analyses(root: Path, folder: Path, seen: set[str]) -> list[FoundAnalysis]:
    """The workspace files ``globalInfo.txt`` names (jsonFiles_FullLikelihood or jsonFiles), any
    file name, one analysis each; signals come from the folder's efficiency maps."""
    from recastfit.signals.effmap import smodels_workspaces

    out = []
    for path in sorted(smodels_workspaces(folder)):
        if path.name in seen:
            continue
        out.append(FoundAnalysis(_name(root, folder, path.stem), path, None, None))
    return out


def _load(path: Path) -> object:
    """Strict JSON, size-capped (limit ``max_workspace_bytes``)."""
    try:
        return load_json_file(path, limit_name="max_workspace_bytes", what="workspace or patch file")
    except InputError as exc:
        raise InputError(
            str(path), None, f"not readable JSON: {str(exc).removeprefix(f'{path}: ')}"
        ) from None


def validate_analysis(analysis: FoundAnalysis) -> None:
    """Validate the workspace (pyhf.Workspace), the patchset (pyhf.PatchSet) or each legacy patch."""
    import pyhf  # imported here: pyhf (scipy) is slow to import and `recastfit --help` needs none of it
    import pyhf.exceptions
    import pyhf.schema

    spec = _load(analysis.workspace)
    try:
        pyhf.Workspace(spec)
    except (pyhf.exceptions.InvalidSpecification, KeyError, TypeError) as exc:
        raise InputError(str(analysis.workspace), None, f"not a valid pyhf workspace: {_msg(exc)}") from exc
    if analysis.patchset is not None:
        try:
            pyhf.PatchSet(_load(analysis.patchset))
        except (
            pyhf.exceptions.InvalidSpecification,
            pyhf.exceptions.InvalidPatchSet,
            KeyError,
            TypeError,
            AttributeError,
        ) as exc:
            raise InputError(str(analysis.patchset), None, f"not a valid pyhf PatchSet: {_msg(exc)}") from exc
    if analysis.patch_dir is not None:
        for patch_file in sorted(analysis.patch_dir.glob("patch*.json")):
            try:
                pyhf.schema.validate(_load(patch_file), "jsonpatch.json")
            except pyhf.exceptions.InvalidSpecification as exc:
                raise InputError(str(patch_file), None, f"not a valid JSON Patch: {_msg(exc)}") from exc


def _msg(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def select(found: list[FoundAnalysis], name: str | None) -> FoundAnalysis:
    """The only analysis, or the one called ``name``; FetchError listing the names otherwise."""
    names = [a.name for a in found]
    if not found:
        raise FetchError("no pallet found: expected a BkgOnly.json (optionally with a patchset.json)")
    if name is None:
        if len(found) == 1:
            return found[0]
        raise FetchError(
            f"the pallet holds {len(found)} analyses {names}; "
            "choose one with --analysis NAME (config key pallet.analysis)"
        )
    for analysis in found:
        if analysis.name == name:
            return analysis
    matches = [a for a in found if a.name.lower() == name.lower() or a.name.rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    raise FetchError(f"analysis {name!r} not found in the pallet; available: {names}")
