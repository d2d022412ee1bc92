"""Group signal patches by structure and locate their numbers in the dense model.

Two patches have the same *structure* when they are equal after every number is replaced by
a placeholder (and the numbers have the same signs, since zero/negative yields or widths fix
parameters in pyhf). For one structure a single dense model is built; the patch numbers are
located by applying a copy of the patch whose numbers are distinct sentinels and finding
where the sentinels land in the raw arrays. Numbers that land nowhere (e.g. a changed
measurement setting) become part of the structure key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import jsonpatch
import numpy as np
import pyhf

from recastfit.infer.dense import RAW_CELL_KEYS, DenseModel, Unsupported, build_dense

__all__ = ["PatchInfo", "Structure", "split_patch", "analyse", "unify_patches", "Unsupported"]

_SENTINEL_BASE = 7.0e250
_SENTINEL_STEP = 1.0e236
_MAX_LEAVES = 10**9


@dataclass(frozen=True)
class PatchInfo:
    """A patch reduced to its skeleton (numbers replaced) and its numbers, in walk order."""

    skeleton: str
    leaves: np.ndarray


def _walk(obj, leaves: list, replace) -> object:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, float)):
        leaves.append(float(obj))
        return replace(len(leaves) - 1)
    if isinstance(obj, list):
        return [_walk(v, leaves, replace) for v in obj]
    if isinstance(obj, dict):
        return {k: _walk(v, leaves, replace) for k, v in obj.items()}
    raise TypeError(f"unexpected JSON value {obj!r}")


def split_patch(patch: list[dict]) -> PatchInfo:
    """Skeleton string and numbers of ``patch``."""
    leaves: list[float] = []
    skel = _walk(patch, leaves, lambda _k: "#")
    return PatchInfo(json.dumps(skel, sort_keys=True, separators=(",", ":")), np.asarray(leaves, float))


def _sentinel_patch(patch: list[dict]) -> list[dict]:
    return _walk(patch, [], lambda k: _SENTINEL_BASE + k * _SENTINEL_STEP)


def _decode(arr: np.ndarray, nleaves: int) -> np.ndarray:
    """Leaf index of every entry of ``arr`` holding a sentinel, -1 elsewhere."""
    k = np.rint((arr - _SENTINEL_BASE) / _SENTINEL_STEP)
    hit = (arr >= _SENTINEL_BASE * 0.999) & (k >= 0) & (k < nleaves)
    return np.where(hit, k, -1).astype(int)


@dataclass
class Structure:
    """One dense model for all patches of one structure, plus where their numbers go."""

    dense: DenseModel
    static_cells: np.ndarray
    var_cells: np.ndarray
    slots: dict = field(default_factory=dict)  # raw key -> (flat positions in var group, leaf indices)
    obs_slots: tuple = (np.zeros(0, int), np.zeros(0, int))
    tracked: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    sensitive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    nleaves: int = 0
    leaves: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the representative's numbers

    def subkey(self, leaves: np.ndarray) -> tuple:
        """What, beyond the skeleton, must match for a patch to share this model."""
        signs = np.sign(leaves[self.sensitive]).astype(np.int8).tobytes()
        return (signs, tuple(leaves[~self.tracked]))

    @property
    def bkg_shareable(self) -> bool:
        """True when the mu=0 fit (and Asimov data) cannot depend on the patch numbers."""
        if len(self.obs_slots[0]):
            return False
        cells = self.dense.cells.select(self.var_cells)
        has_poi = np.all(np.any(cells.mult == self.dense.poi, axis=1))
        no_constraint = np.all(cells.st_par < 0) and np.all(cells.sh_par < 0)
        return bool(has_poi and no_constraint)


def analyse(bkg_spec: dict, patch: list[dict], info: PatchInfo | None = None) -> Structure:
    """Build the :class:`Structure` of ``patch`` on ``bkg_spec`` (raises :class:`Unsupported`)."""
    info = info or split_patch(patch)
    merged = jsonpatch.apply_patch(bkg_spec, patch)
    model = pyhf.Workspace(merged).model()
    dense = build_dense(merged, model)
    tagged = build_dense(jsonpatch.apply_patch(bkg_spec, _sentinel_patch(patch)), model)
    nleaves = len(info.leaves)
    raw_t = tagged.cells
    hits = {key: _decode(np.asarray(getattr(raw_t, key), float), nleaves) for key in RAW_CELL_KEYS}
    obs_hit = _decode(tagged.obs, nleaves)
    var = np.zeros(len(raw_t.nom), bool)
    for arr in hits.values():
        var |= (arr >= 0).reshape(-1, len(var)).any(axis=0)
    var_cells = np.flatnonzero(var)
    static_cells = np.flatnonzero(~var)
    slots = {}
    tracked = np.zeros(nleaves, bool)
    for key, arr in hits.items():
        sub = arr[..., var_cells].reshape(-1)
        pos = np.flatnonzero(sub >= 0)
        slots[key] = (pos, sub[pos])
        tracked[sub[pos]] = True
    sensitive = np.zeros(nleaves, bool)  # zero/negative values of these fix parameters in pyhf
    constrained_cell = (raw_t.st_par >= 0) | (raw_t.sh_par >= 0)
    for arr in (hits["st_d"], hits["sh_d"], np.where(constrained_cell, hits["nom"], -1)):
        sensitive[arr[arr >= 0]] = True
    obs_pos = np.flatnonzero(obs_hit >= 0)
    tracked[obs_hit[obs_pos]] = True
    for key in ("mult", "st_par", "sh_par", "cbin", "hs_on"):
        if not np.array_equal(getattr(dense.cells, key), getattr(raw_t, key)):
            raise Unsupported(f"patch numbers change the model layout ({key})")
    return Structure(
        dense=dense,
        static_cells=static_cells,
        var_cells=var_cells,
        slots=slots,
        obs_slots=(obs_pos, obs_hit[obs_pos]),
        tracked=tracked,
        sensitive=sensitive,
        nleaves=nleaves,
        leaves=info.leaves,
    )


_NEUTRAL = ("normsys", "histosys")
_LOCAL = ("shapesys", "staterror", "shapefactor")


def _added_samples(patch: list[dict]):
    """(op index, key) of every op that adds a whole sample (a dict with data and modifiers)."""
    for i, op in enumerate(patch):
        value = op.get("value")
        if (
            op.get("op") in ("add", "replace")
            and isinstance(value, dict)
            and "modifiers" in value
            and "data" in value
        ):
            yield i, (op["path"], value.get("name"))


def _renamed(bkg_spec: dict, patches: list[list[dict]]):
    """Added samples and their patch-local parameters renamed canonically, per patch.

    Sample names have no numeric effect in pyhf (they only order the sample axis), nor do the
    names of parameters that only the patch introduces (they only order the parameter vector);
    new signal samples are often named after their mass point, which would otherwise make
    every patch a structure of its own. Samples become ``recastfit_added_<k>``, patch-local
    per-bin modifiers (shapesys, staterror, shapefactor) ``recastfit_<type>_<k>``, in order of
    first appearance; normsys/histosys/normfactor names are kept (they name shared effects).
    """
    known = {
        m["name"] for c in bkg_spec["channels"] for smp in c["samples"] for m in smp.get("modifiers", [])
    }
    known |= {
        par["name"]
        for meas in bkg_spec.get("measurements", [])
        for par in meas["config"].get("parameters", [])
    }
    known |= {meas["config"].get("poi") for meas in bkg_spec.get("measurements", [])}
    for patch in patches:
        names: dict = {}
        mods: dict = {}
        other = json.dumps([op for op in patch if not _is_sample_op(op)])
        new = []
        for op in patch:
            if _is_sample_op(op):
                value = op["value"]
                canon = names.setdefault(value.get("name"), f"recastfit_added_{len(names)}")
                renamed = []
                for m in value["modifiers"]:
                    name = m.get("name")
                    kind = m.get("type")
                    if kind in _LOCAL and name not in known and json.dumps(name) not in other:
                        count = sum(1 for k in mods if k[0] == kind)
                        name = mods.setdefault((kind, name), f"recastfit_{kind}_{count}")
                    renamed.append({**m, "name": name})
                op = {**op, "value": {**value, "name": canon, "modifiers": renamed}}
            new.append(op)
        yield new


def _is_sample_op(op: dict) -> bool:
    value = op.get("value")
    return (
        op.get("op") in ("add", "replace")
        and isinstance(value, dict)
        and "modifiers" in value
        and "data" in value
    )


def _neutral(kind: str, name: str, data: list) -> dict:
    if kind == "normsys":
        return {"name": name, "type": kind, "data": {"hi": 1.0, "lo": 1.0}}
    return {"name": name, "type": kind, "data": {"hi_data": list(data), "lo_data": list(data)}}


def unify_patches(bkg_spec: dict, patches: list[list[dict]]) -> tuple[list[list[dict]], np.ndarray]:
    """Patches with the same added samples made structurally equal where that is exact.

    A normsys or histosys missing from an added sample of one patch but present in another is
    added with neutral data (factors 1; templates equal to the nominal), and modifiers are
    sorted, so the patches share one compiled model. A parameter that exists only through such
    a neutral entry is decoupled: it shifts every NLL of that point by the same constant
    (returned per patch, in NLL units), which hypothesis tests do not see.
    """
    union: dict = {}
    for patch in _renamed(bkg_spec, patches):
        for i, key in _added_samples(patch):
            mods = union.setdefault(key, {})
            for m in patch[i]["value"]["modifiers"]:
                if m.get("type") in _NEUTRAL:
                    mods[(m["type"], m["name"])] = True
    bkg_names = {
        m["name"] for c in bkg_spec["channels"] for s in c["samples"] for m in s.get("modifiers", [])
    }
    all_new = {name for mods in union.values() for (_, name) in mods} - bkg_names
    out, offsets = [], np.zeros(len(patches))
    for p, patch in enumerate(_renamed(bkg_spec, patches)):
        new = []
        own = set()
        for op in patch:
            if isinstance(op.get("value"), dict):
                own |= {m["name"] for m in op["value"].get("modifiers", []) if isinstance(m, dict)}
        added = dict(_added_samples(patch))
        for i, op in enumerate(patch):
            if i not in added:
                new.append(op)
                continue
            value = dict(op["value"])
            mods = list(value["modifiers"])
            have = {(m.get("type"), m["name"]) for m in mods}
            mods += [
                _neutral(kind, name, value["data"])
                for (kind, name) in union[added[i]]
                if (kind, name) not in have
            ]
            value["modifiers"] = sorted(mods, key=lambda m: (m.get("type", ""), m["name"]))
            new.append({**op, "value": value})
        out.append(new)
        offsets[p] = 0.5 * np.log(2 * np.pi) * len(all_new - own)
    return out, offsets
