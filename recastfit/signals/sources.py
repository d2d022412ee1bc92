"""Read the new signal named by a :class:`~recastfit.signals.spec.SignalSpec` as per-point yields.

One reader per ``signal.type`` (yields, effmap, root, recast; patchset and patch_folder need
no yields and are read by :mod:`recastfit.pallet`). The keys of each type are documented in
the config schema (``workflows/schemas/config.schema.yaml``, block ``signal``).

``recast``: the yields of each point are read from ``<yields_dir>/<point>.json``, written by
the ``recast`` rule (``recastfit recast``); a missing file is an error saying so: this module
never runs a workflow itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recastfit.errors import ConfigError, InputError
from recastfit.signals.model import PointYields, values_from_name
from recastfit.signals.spec import (
    EffmapSignal,
    PointDef,
    RecastSignal,
    RootSignal,
    SignalSpec,
    YieldsSignal,
    parse_signal,
    point_defs,
)

__all__ = ["Found", "load_signal_points", "resolve_points", "recast_points", "recast_settings"]


@dataclass
class Found:
    """What a source yields: points, (name, reason) per skipped point, and how many (point,
    region) efficiencies were set to 0 outside a map's hull (efficiency maps only), and notes."""

    points: list[PointYields]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    outside_hull: int = 0
    notes: list[str] = field(default_factory=list)


def resolve_points(
    points: tuple[PointDef, ...] | Path, parameters: Sequence[str] = (), prefix: str = ""
) -> tuple[PointDef, ...]:
    """The spec's points: given inline, or read from a points file (validated the same way)."""
    if isinstance(points, Path):
        from recastfit.signals.yields_file import read_points_file

        raw = read_points_file(points)
        return point_defs(
            raw, file=str(points), key="points", parameters=parameters, prefix=prefix, config=False
        )
    return points


def _as_spec(
    spec: SignalSpec | Mapping[str, Any],
    config_file: str | None,
    base_dir: Path | None,
    parameters: Sequence[str],
) -> SignalSpec:
    if isinstance(spec, SignalSpec):
        return spec
    return parse_signal(
        spec,
        file=config_file or "config.yaml",
        parameters=list(parameters),
        base_dir=Path(base_dir or Path.cwd()),
    )


def _rename(point: PointYields, regions: Mapping[str, str] | None, source: str) -> PointYields:
    if not regions:
        return point
    missing = [r for r in regions if r not in point.channels]
    if missing:
        raise InputError(
            source, f"point '{point.name}'", f"region(s) {missing} missing; present: {sorted(point.channels)}"
        )
    return PointYields(
        point.name, point.values, {ch: point.channels[r] for r, ch in regions.items()}, point.theory
    )


# --------------------------------------------------------------------------------------------- types
def _from_yields(spec: YieldsSignal, parameters: Sequence[str]) -> Found:
    from recastfit.signals.yields_file import read_yields_file

    declared, points = read_yields_file(spec.path)
    if declared and parameters and list(declared) != list(parameters):
        raise InputError(
            str(spec.path),
            "parameters",
            f"{declared} differ from the config's grid.parameters {list(parameters)}",
        )
    return Found([_rename(p, spec.regions, str(spec.path)) for p in points])


def _maps(spec: EffmapSignal, bkg_channels: set[str]) -> tuple[dict, str, float, list[str]]:
    """(channel -> map, txname, lumi in fb^-1, notes) for an SModelS analysis folder."""
    from recastfit.signals.effmap import read_effmap, read_global_info

    folder = spec.path
    info_path = folder / "globalInfo.txt"
    info = read_global_info(info_path) if info_path.is_file() else None
    notes: list[str] = []
    regions = spec.regions
    from_info = regions is None
    if regions is None:
        workspaces = info.workspaces if info else {}
        if spec.workspace is not None:
            if spec.workspace not in workspaces:
                raise spec.err(
                    "workspace",
                    f"one of the workspace files in {info_path} {sorted(workspaces)}",
                    spec.workspace,
                )
            regions = workspaces[spec.workspace]
        else:
            fitting = {f: r for f, r in workspaces.items() if r and set(r.values()) <= bkg_channels}
            if len(fitting) > 1 and len({tuple(sorted(r.items())) for r in fitting.values()}) > 1:
                raise spec.err(
                    "workspace",
                    f"which workspace file the regions belong to (several fit: {sorted(fitting)})",
                )
            regions = next(iter(fitting.values()), None)
        if not regions:
            raise spec.err(
                "regions",
                f"{{smodels region: workspace channel}} ({info_path} names none that fit the workspace)",
            )
    if spec.lumi_fb is not None:
        lumi = spec.lumi_fb
    elif info and info.lumi_fb:
        lumi = info.lumi_fb
    else:
        raise spec.err("lumi", "a luminosity such as '139/fb' (globalInfo.txt has none)")
    for region in regions:
        if not (folder / region).is_dir():
            raise spec.err(f"regions.{region}", f"a region folder inside {folder}", str(folder / region))
    txname = spec.txname
    if txname is None:
        names = {p.stem for r in regions for p in (folder / r).glob("*.txt") if p.name != "dataInfo.txt"}
        if len(names) != 1:
            raise spec.err("txname", f"the map name (found {sorted(names) or 'none'} in the region folders)")
        txname = names.pop()
    maps = {}
    for region, channel in regions.items():
        f = folder / region / f"{txname}.txt"
        if not f.is_file():
            if from_info:  # this region has no map for this topology: it sees no signal
                notes.append(f"region {region} has no {txname} map (no signal there)")
                continue
            raise spec.err(f"regions.{region}", f"a region folder holding {txname}.txt", str(f))
        maps[channel] = read_effmap(f, region)
    if not maps:
        raise spec.err("txname", f"a map name present in the region folders of {folder}", txname)
    return maps, txname, lumi, notes


def _from_effmap(spec: EffmapSignal, bkg_channels: set[str], parameters: Sequence[str]) -> Found:
    from recastfit.signals.effmap import effmap_name, effmap_yields

    maps, txname, lumi, notes = _maps(spec, bkg_channels)
    unknown = sorted(set(maps) - bkg_channels)
    if unknown:
        raise spec.err("regions", f"workspace channels (the workspace has {sorted(bkg_channels)})", unknown)
    prefix = spec.name_prefix if spec.name_prefix is not None else txname
    xsec: Any
    if spec.slha is not None:
        from recastfit.signals.slha import read_slha_folder

        proc = spec.xsec_process
        assert proc is not None and spec.masses is not None  # parse_signal ensures both with slha
        slha = read_slha_folder(spec.slha, spec.masses, proc.final, initial=proc.initial, sqrts=proc.sqrts)
        slha = [p for p in slha if spec.in_window(p.values)]
        wanted = [p.values for p in slha]
        names = [effmap_name(prefix, v) for v in wanted]
        xsec = {p.values: (p.xsec_pb, p.theory) for p in slha}
    else:
        from recastfit.signals.xsec import load_xsec_table

        xsec = load_xsec_table(spec.xsec)
        if spec.points is not None:
            defs = resolve_points(spec.points, parameters, prefix)
            defs = tuple(d for d in defs if spec.in_window(d.values))
            wanted = [d.values for d in defs]
            names = [effmap_name(prefix, d.values) if d.auto_name else d.name for d in defs]
        else:
            grid = sorted(set().union(*(m.values for m in maps.values())))
            wanted = [p for p in grid if spec.in_window(p)]
            names = [effmap_name(prefix, p) for p in wanted]
    result = effmap_yields(
        maps,
        xsec,
        lumi_fb=lumi,
        xsec_mass=spec.xsec_mass,
        xsec_scale=spec.xsec_scale,
        floor=spec.floor,
        points=wanted,
        names=names,
        on_xsec_range=spec.on_xsec_range,
    )
    return Found(result.points, result.skipped, result.outside_hull, notes)


def _from_root(spec: RootSignal, parameters: Sequence[str]) -> Found:
    from recastfit.signals.root_hists import list_points, read_root_grid, read_root_point

    raw_path = spec.path
    per_point = "{point}" in raw_path
    pattern = spec.histogram or ("{region}" if per_point else "{point}/{region}")
    nparams = len(parameters) if parameters else 2
    full = raw_path if Path(raw_path).is_absolute() else str(spec.base_dir / raw_path)
    if spec.points is not None:
        defs = resolve_points(spec.points, parameters)
        points = [(d.name, d.values) for d in defs]
    elif per_point:
        regex = re.compile("^" + re.escape(full).replace(re.escape("{point}"), "(?P<point>[^/]+)") + "$")
        files = sorted(Path("/").glob(full.replace("{point}", "*").lstrip("/")))
        names = [m.group("point") for f in files if (m := regex.match(str(f)))]
        if not names:
            raise spec.err("path", "a file pattern matching at least one file", full)
        points = [(n, values_from_name(n, nparams, source=full)) for n in names]
    else:
        points = [(n, values_from_name(n, nparams, source=full)) for n in list_points(Path(full), pattern)]
    if spec.points is None:  # names found in files: held to the same rules as names in a config
        point_defs(
            [{"name": n, "values": list(v)} for n, v in points],
            file=full,
            key="points",
            parameters=(),
            config=False,
        )
    points = [(n, v) for n, v in points if spec.in_window(v)]
    if per_point:
        out = [
            read_root_point(
                Path(full.replace("{point}", name)), name, values, pattern=pattern, regions=spec.regions
            )
            for name, values in points
        ]
    else:
        out = read_root_grid(Path(full), points, pattern=pattern, regions=spec.regions)
    return Found(out)


def recast_points(
    spec: RecastSignal | Mapping[str, Any],
    *,
    config_file: str | None = None,
    base_dir: Path | None = None,
    parameters: Sequence[str] | None = None,
) -> list[tuple[str, tuple[float, ...]]]:
    """The (name, values) of every point the ``recast`` rule runs (validated; window applied).

    ``spec`` is a :class:`RecastSignal`, or a raw ``signal:`` section (then parsed with
    ``config_file``, ``base_dir`` and ``parameters``).
    """
    s = _as_spec(spec, config_file, base_dir, parameters or ())
    if not isinstance(s, RecastSignal):
        raise s.err("type", "recast", s.type)
    defs = resolve_points(s.points, parameters or ())
    return [(d.name, d.values) for d in defs if s.in_window(d.values)]


def recast_settings(
    spec: RecastSignal | Mapping[str, Any], *, config_file: str | None = None, base_dir: Path | None = None
) -> dict[str, Any]:
    """Keyword arguments of :func:`recastfit.signals.recast.run_point` (all but the point)."""
    s = _as_spec(spec, config_file, base_dir, ())
    if not isinstance(s, RecastSignal):
        raise s.err("type", "recast", s.type)
    return {
        "spec_dir": s.spec,
        "workflow": s.workflow,
        "inputs": s.inputs,
        "output": s.output,
        "regions": s.regions,
        "histogram": s.histogram,
        "backend": s.backend,
        "timeout": s.timeout,
    }


def _from_recast(spec: RecastSignal, parameters: Sequence[str], results_dir: Path | None) -> Found:
    from recastfit.signals.yields_file import read_yields_file

    if spec.yields_dir is not None:
        ydir = spec.yields_dir
    elif results_dir is not None:
        ydir = Path(results_dir) / "yields"
    else:
        raise spec.err("yields_dir", "a folder for yields/<point>.json (no results folder was given)")
    out = []
    for name, values in recast_points(spec, parameters=parameters):
        f = ydir / f"{name}.json"
        if not f.is_file():
            raise InputError(
                str(f),
                None,
                f"missing: the yields of recast point '{name}' are written by the recast rule "
                "(run `snakemake --cores N recast`, or `recastfit recast` for this point) first",
            )
        _, pts = read_yields_file(f)
        if len(pts) != 1 or pts[0].name != name:
            raise InputError(
                str(f), "name", f"expected the yields of point '{name}', got {[p.name for p in pts]}"
            )
        out.append(PointYields(name, values, pts[0].channels, pts[0].theory))
    return Found(out)


def load_signal_points(
    spec: SignalSpec | Mapping[str, Any],
    *,
    bkg_spec: dict,
    results_dir: Path | None = None,
    parameters: Sequence[str] | None = None,
    config_file: str | None = None,
    base_dir: Path | None = None,
) -> Found:
    """Read the new signal of ``spec`` (types yields, effmap, root, recast) and check it.

    Channels are checked against ``bkg_spec`` here so that a wrong region name fails with the
    config key that set it; ``results_dir`` holds ``yields/`` for ``recast``. ``parameters``
    (the grid's names) check the points' values; a raw section (a mapping) is parsed first with
    ``config_file`` and ``base_dir`` (see :func:`~recastfit.signals.spec.parse_signal`).
    With ``signal.options.theory_uncertainty: per_point`` every point must carry its own.
    """
    params = list(parameters or ())
    spec = _as_spec(spec, config_file, base_dir, params)
    channels = {c["name"] for c in bkg_spec.get("channels", [])}
    if isinstance(spec, YieldsSignal):
        found = _from_yields(spec, params)
    elif isinstance(spec, EffmapSignal):
        found = _from_effmap(spec, channels, params)
    elif isinstance(spec, RootSignal):
        found = _from_root(spec, params)
    elif isinstance(spec, RecastSignal):
        found = _from_recast(spec, params, results_dir)
    else:
        raise spec.err(
            "type", "yields, effmap, root or recast (patchset/patch_folder carry patches)", spec.type
        )
    found.points = [p for p in found.points if spec.in_window(p.values)]
    for p in found.points:
        if params and len(p.values) != len(params):
            raise InputError(
                spec.file,
                "signal",
                f"point '{p.name}' has values {list(p.values)}, expected one per grid parameter {params}",
            )
        unknown = sorted(set(p.channels) - channels)
        if unknown:
            key = "signal.regions" if getattr(spec, "regions", None) else "signal.path"
            raise InputError(
                spec.file,
                key,
                f"point '{p.name}': channel(s) {unknown} not in the workspace; "
                f"its channels are {sorted(channels)}",
            )
    if spec.options.theory_uncertainty == "per_point":
        lacking = [p.name for p in found.points if p.theory is None]
        if lacking:
            raise ConfigError(
                spec.file,
                "signal.options.theory_uncertainty",
                "per-point theory values for every point (e.g. a cross-section table with unc_up_pb/"
                f"unc_down_pb, or 'theory' in the yields file); {len(lacking)} point(s) have none, e.g.",
                lacking[0],
            )
    if not found.points:
        reasons = "; ".join(f"{n}: {r}" for n, r in found.skipped[:5])
        raise InputError(
            spec.file, "signal", "no signal points left" + (f" (skipped: {reasons})" if reasons else "")
        )
    return found
