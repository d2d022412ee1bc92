"""New-signal yields -> RFC 6902 JSON patches -> a pyhf PatchSet, validated against the workspace."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from recastfit.errors import InputError
from recastfit.names import check_name
from recastfit.results import PatchTask
from recastfit.signals.model import MAX_ABS, PointYields, invalid_yields

__all__ = ["SignalOptions", "build_patch", "build_patchset", "patchset_tasks", "workspace_poi"]


@dataclass(frozen=True)
class SignalOptions:
    """How the new signal sample enters the workspace.

    ``stat``: MC-stat uncertainty as ``staterror`` (shared per channel with the background's,
    as HistFactory does), ``shapesys`` (Poisson-constrained, per signal bin) or ``none``.
    ``theory_uncertainty``: relative signal-normalisation uncertainty added as a normsys, or
    ``"per_point"``: each point's own (up, down), e.g. from the cross-section table.
    ``replace_samples``: existing samples (e.g. the published signal) removed from every channel.
    """

    sample_name: str = "signal"
    poi: str | None = None  # None -> the measurement's POI
    lumi: bool = True
    stat: str = "staterror"
    theory_uncertainty: float | str | None = None
    theory_name: str = "theory_signal"
    replace_samples: tuple[str, ...] = ()
    position: int = 0

    def __post_init__(self) -> None:
        if self.stat not in ("staterror", "shapesys", "none"):
            raise ValueError(f"stat must be staterror, shapesys or none, got {self.stat!r}")
        u = self.theory_uncertainty
        number = isinstance(u, int | float) and not isinstance(u, bool)
        if not (u is None or u == "per_point" or number and 0 <= u < 1):  # NaN fails 0 <= u
            raise ValueError(f"theory_uncertainty must be a number in [0, 1), per_point or null, got {u!r}")
        if not isinstance(self.position, int) or isinstance(self.position, bool) or self.position < 0:
            raise ValueError(f"position must be an integer >= 0, got {self.position!r}")


def _pyhf_digest(spec: dict) -> str:
    """pyhf's workspace digest (sha256 of ``json.dumps(sort_keys=True)``), as PatchSet.verify checks."""
    import pyhf

    return pyhf.utils.digest(spec)


def workspace_poi(bkg_spec: dict) -> str:
    """The POI name of the (first) measurement."""
    try:
        return bkg_spec["measurements"][0]["config"]["poi"]
    except (KeyError, IndexError, TypeError):
        raise InputError("workspace", "measurements[0].config.poi", "missing") from None


def _modifier_name(channel: dict, mod_type: str) -> str | None:
    for sample in channel["samples"]:
        for mod in sample.get("modifiers", []):
            if mod["type"] == mod_type:
                return mod["name"]
    return None


def _lumi_name(bkg_spec: dict) -> str | None:
    for channel in bkg_spec["channels"]:
        name = _modifier_name(channel, "lumi")
        if name:
            return name
    return None


def _check_yields(point: PointYields, channel: str, nbins: int, source: str) -> None:
    cy = point.channels[channel]
    where = f"point '{point.name}', channel '{channel}'"
    if len(cy.yields) != nbins:
        raise InputError(source, where, f"has {len(cy.yields)} bins, the workspace channel has {nbins}")
    for label, arr in (("yields", cy.yields), ("stat", cy.stat or ())):
        bad = invalid_yields(arr)
        if bad:
            raise InputError(source, f"{where}, {label}", f"expected finite values >= 0, got {bad}")
    if cy.stat is not None and len(cy.stat) != nbins:
        raise InputError(source, f"{where}, stat", f"has {len(cy.stat)} entries, expected {nbins}")


def _theory(point: PointYields, opts: SignalOptions, source: str) -> tuple[float, float] | None:
    """(up, down) relative theory uncertainty of this point's signal, or None."""
    if opts.theory_uncertainty == "per_point":
        if point.theory is None:
            raise InputError(
                source,
                f"point '{point.name}'",
                "signal.options.theory_uncertainty is per_point but this point carries no theory values",
            )
        return point.theory
    if opts.theory_uncertainty:
        u = float(opts.theory_uncertainty)
        return u, u
    return None


def _sample(
    point: PointYields, channel: dict, opts: SignalOptions, poi: str, lumi: str | None, source: str
) -> dict:
    cy = point.channels[channel["name"]]
    mods: list[dict[str, Any]] = [{"name": poi, "type": "normfactor", "data": None}]
    if opts.lumi and lumi:
        mods.append({"name": lumi, "type": "lumi", "data": None})
    theory = _theory(point, opts, source)
    if theory:
        up, down = theory
        mods.append({"name": opts.theory_name, "type": "normsys", "data": {"hi": 1.0 + up, "lo": 1.0 - down}})
    if cy.stat is not None and opts.stat == "staterror":
        name = _modifier_name(channel, "staterror") or f"staterror_{channel['name']}"
        mods.append({"name": name, "type": "staterror", "data": [float(v) for v in cy.stat]})
    elif cy.stat is not None and opts.stat == "shapesys":
        data = [float(v) for v in cy.stat]
        mods.append(
            {"name": f"shapesys_{opts.sample_name}_{channel['name']}", "type": "shapesys", "data": data}
        )
    return {"name": opts.sample_name, "data": [float(v) for v in cy.yields], "modifiers": mods}


def build_patch(
    bkg_spec: dict, point: PointYields, options: SignalOptions = SignalOptions(), *, source: str = "yields"
) -> list[dict]:
    """RFC 6902 operations that remove ``replace_samples`` and add the point's signal sample."""
    index = {c["name"]: i for i, c in enumerate(bkg_spec["channels"])}
    unknown = [ch for ch in point.channels if ch not in index]
    if unknown:
        raise InputError(
            source,
            f"point '{point.name}', channel '{unknown[0]}'",
            f"not in the workspace; its channels are {sorted(index)}",
        )
    poi = options.poi or workspace_poi(bkg_spec)
    lumi = _lumi_name(bkg_spec)
    ops: list[dict] = []
    for ch_name, ci in index.items():
        channel = bkg_spec["channels"][ci]
        kept = [s for s in channel["samples"] if s["name"] not in options.replace_samples]
        for si in reversed(range(len(channel["samples"]))):
            if channel["samples"][si]["name"] in options.replace_samples:
                ops.append({"op": "remove", "path": f"/channels/{ci}/samples/{si}"})
        if ch_name not in point.channels:
            continue
        nbins = len(channel["samples"][0]["data"])
        _check_yields(point, ch_name, nbins, source)
        if any(s["name"] == options.sample_name for s in kept):
            raise InputError(
                source,
                f"channel '{ch_name}'",
                f"already has a sample '{options.sample_name}': "
                "list it in signal.options.replace_samples or rename the signal",
            )
        pos = min(options.position, len(kept))
        value = _sample(point, channel, options, poi, lumi, source)
        ops.append({"op": "add", "path": f"/channels/{ci}/samples/{pos}", "value": value})
    return ops


def build_patchset(
    bkg_spec: dict,
    points: Iterable[PointYields],
    options: SignalOptions = SignalOptions(),
    *,
    parameters: Sequence[str],
    analysis_id: str = "recastfit",
    description: str = "signal patches generated by recastfit",
    hepdata_record: str | None = None,
    source: str = "yields",
) -> dict:
    """A pyhf PatchSet spec (schema-validated) holding one patch per point.

    pyhf's schema requires ``metadata.references.hepdata`` (``ins`` + 7 digits): pass the
    pallet's INSPIRE id; ``ins0000000`` marks an analysis with no HEPData record (e.g. the demo).
    """
    patches = []
    names: dict[str, str] = {}
    values: dict[tuple[float, ...], str] = {}
    for point in points:
        check_name(point.name, file=source, key=f"point '{point.name}'")
        bad = [v for v in point.values if not math.isfinite(v) or abs(v) > MAX_ABS]
        if bad:
            raise InputError(source, f"point '{point.name}', values", f"expected finite numbers, got {bad}")
        if point.name in names:
            raise InputError(source, f"point '{point.name}'", "duplicate point name")
        if point.values in values:
            raise InputError(
                source,
                f"point '{point.name}'",
                f"same values {list(point.values)} as point '{values[point.values]}'",
            )
        names[point.name] = values[point.values] = point.name
        if len(point.values) != len(parameters):
            raise InputError(
                source,
                f"point '{point.name}', values",
                f"has {len(point.values)} values, expected one per parameter {list(parameters)}",
            )
        patches.append(
            {
                "metadata": {"name": point.name, "values": [float(v) for v in point.values]},
                "patch": build_patch(bkg_spec, point, options, source=source),
            }
        )
    if not patches:
        raise InputError(source, None, "no signal points")
    spec = {
        "metadata": {
            "name": analysis_id,
            "description": description,
            "digests": {"sha256": _pyhf_digest(bkg_spec)},
            "labels": list(parameters),
            "references": {"hepdata": hepdata_record or "ins0000000"},
        },
        "patches": patches,
        "version": "1.0.0",
    }
    import pyhf  # imported here: `recastfit` CLI start-up stays fast for verbs that never need it

    pyhf.PatchSet(spec)  # schema validation; raises on a malformed spec
    return spec


def patchset_tasks(patchset_spec: dict) -> list[PatchTask]:
    """The PatchSet's patches as :class:`PatchTask` objects (name, values, ops)."""
    return [
        PatchTask(p["metadata"]["name"], tuple(float(v) for v in p["metadata"]["values"]), p["patch"])
        for p in patchset_spec["patches"]
    ]
