"""Dispatch a config ``signal:`` section to its yields source; every path is relative to ``base_dir``.

Keys per ``signal.type`` (``options`` is read by the patch builder, ``type`` picks the source):

``yields`` - yields a theorist already computed::

    path:     yields file, JSON or YAML: {parameters, points: [{name, values, channels}]}   (required)
    regions:  {file channel: workspace channel}, renames (and selects) channels             (optional)

``effmap`` - SModelS efficiency maps x cross section x luminosity::

    path:        analysis folder: globalInfo.txt + <region>/<txname>.txt                    (required)
    xsec:        cross-section table (JSON as in shared/data/xsec, {mass: pb}, or text)     (required)
    txname:      map name, e.g. TStauStau (default: the only map in the region folders)
    regions:     {smodels region: workspace channel} (default: globalInfo.txt jsonFiles)
    lumi:        e.g. 139 or "139/fb" (default: globalInfo.txt lumi)
    xsec_mass:   grid parameter (name or index) the cross section depends on (default: the first)
    xsec_scale:  factor on the cross section, e.g. a branching ratio (default 1)
    floor:       smallest yield written (default 1e-6; 0 keeps empty regions empty)
    points:      [[m1, m2], ...] to evaluate (interpolated inside each map's hull); default: the
                 points present in every map. Points outside a map are skipped and reported.
    on_xsec_range: error (default) | skip - a cross-section mass outside the table
    name_prefix: point-name prefix (default: txname), names look like TStauStau_280_120

``root`` - ROOT histograms, one TH1 per region (values = yields, errors = MC stat)::

    path:       ROOT file; "{point}" in it means one file per point (e.g. hists/{point}.root) (required)
    histogram:  histogram path pattern (default "{region}" per-point files, else "{point}/{region}")
    regions:    {histogram region: workspace channel} (default: every TH1, same name)
    points:     [{name, values}, ...] or a JSON/YAML file of them (default: every point found,
                values read from the numbers in its name, e.g. stau_280_120 -> 280, 120)

``recast`` - a preserved analysis re-run per point with yadage (rule ``recast``)::

    spec:       folder of the yadage workflow spec (required)
    points:     [{name, values}, ...], a JSON/YAML file of them, or "demo" (the demo grid)  (required)
    workflow:   spec file inside ``spec`` (default workflow.yml)
    inputs:     {yadage parameter: template}; templates use the grid parameter names, {point} and
                {python} (default: each grid parameter, point and python under its own name)
    output:     the workflow's yields output, a glob inside its work dir (default: the first of
                **/yields.json, **/yields.y*ml, **/*.root that matches); a .root output is read
                as one TH1 per region (pattern ``histogram``, default "{region}")
    regions:    {output region: workspace channel} (default: same names)
    backend:    yadage/packtivity backend string, e.g. "multiproc:1" (default: yadage's)
    timeout:    seconds per point (default: none)
    yields_dir: where yields/<point>.json are written/read (default: <results dir>/yields)

Every type also takes ``window: {parameter: [lo, hi]}`` (keep points inside, e.g. for a quick run).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recastfit.errors import ConfigError, InputError
from recastfit.signals.model import PointYields

__all__ = ["SignalPoints", "load_signal_points", "recast_points", "SOURCE_KEYS"]

_COMMON = {"type", "options", "window"}
SOURCE_KEYS: dict[str, set[str]] = {
    "yields": {"path", "regions"},
    "effmap": {
        "path",
        "xsec",
        "txname",
        "regions",
        "lumi",
        "xsec_mass",
        "xsec_scale",
        "floor",
        "points",
        "on_xsec_range",
        "name_prefix",
    },
    "root": {"path", "histogram", "regions", "points"},
    "recast": {
        "spec",
        "points",
        "workflow",
        "inputs",
        "output",
        "regions",
        "histogram",
        "backend",
        "timeout",
        "yields_dir",
    },
}


@dataclass
class SignalPoints:
    """What a source yields: parameter names (when the source knows them), points, skipped points."""

    parameters: list[str] | None
    points: list[PointYields]
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _Section:
    """Typed access to one signal section with errors naming ``signal.<key>``."""

    def __init__(self, section: Mapping[str, Any], file: str, base_dir: Path):
        self.raw, self.file, self.base = dict(section), file, Path(base_dir)

    def err(self, key: str, expected: str, got: object = None) -> ConfigError:
        return ConfigError(self.file, f"signal.{key}", expected, got)

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.err(key, "this key to be present (a string)")
            return default
        if not isinstance(value, str) or not value:
            raise self.err(key, "a non-empty string", value)
        return value

    def path(self, key: str, *, required: bool = True, must_exist: bool = True) -> Path | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        p = Path(value)
        p = p if p.is_absolute() else self.base / p
        if must_exist and not p.exists():
            raise self.err(key, "an existing path", str(p))
        return p

    def number(self, key: str, default: float | None, *, minimum: float | None = None) -> float | None:
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.err(key, "a number", value)
        if minimum is not None and value < minimum:
            raise self.err(key, f"a number >= {minimum:g}", value)
        return float(value)

    def mapping(self, key: str) -> dict[str, str] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if (
            not isinstance(value, dict)
            or not value
            or not all(isinstance(k, str) and isinstance(v, str | int | float) for k, v in value.items())
        ):
            raise self.err(key, "a non-empty mapping of names to names", value)
        return {k: str(v) for k, v in value.items()}


def _check_keys(sec: _Section, kind: str) -> None:
    allowed = SOURCE_KEYS[kind] | _COMMON
    for key, value in sec.raw.items():
        if key not in allowed and value is not None:  # null means "not set"
            raise sec.err(key, f"no such key for type '{kind}' (allowed: {', '.join(sorted(allowed))})")


def _param_index(sec: _Section, key: str, name: object, parameters: Sequence[str] | None) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    if isinstance(name, str) and parameters and name in parameters:
        return list(parameters).index(name)
    raise sec.err(key, f"a grid parameter name {list(parameters or [])} or an index", name)


def _window(sec: _Section, parameters: Sequence[str] | None) -> list[tuple[int, float, float]]:
    raw = sec.raw.get("window")
    if raw is None:
        return []
    if not isinstance(raw, dict) or not raw:
        raise sec.err("window", "a mapping {parameter: [lo, hi]}", raw)
    out = []
    for name, bounds in raw.items():
        idx = _param_index(sec, f"window.{name}", name, parameters)
        if (
            not isinstance(bounds, list | tuple)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        ):
            raise sec.err(f"window.{name}", "[lo, hi] (two numbers)", bounds)
        out.append((idx, float(bounds[0]), float(bounds[1])))
    return out


def _in_window(values: Sequence[float], window: list[tuple[int, float, float]]) -> bool:
    return all(idx < len(values) and lo <= values[idx] <= hi for idx, lo, hi in window)


def _fmt(v: float) -> str:
    return f"{v:g}".replace(".", "p")


def _point_list(sec: _Section, key: str, prefix: str = "") -> list[tuple[str, tuple[float, ...]]]:
    """``points``: [{name, values}], [[v1, v2], ...], a JSON/YAML file of them, or "demo"."""
    raw = sec.raw.get(key)
    if raw == "demo":
        from recastfit.demo import demo_grid, point_name

        return [(point_name(m1, m2), (m1, m2)) for m1, m2 in demo_grid()]
    if isinstance(raw, str):
        from recastfit.signals.yields_file import load_structured

        path = sec.path(key)
        data = load_structured(path)
        raw = data.get("points") if isinstance(data, dict) else data
    if not isinstance(raw, list) or not raw:
        raise sec.err(key, "a non-empty list of {name, values} (or [v1, v2]) entries, or a file of them", raw)
    out = []
    for i, entry in enumerate(raw):
        if isinstance(entry, dict) and "name" in entry and isinstance(entry.get("values"), list):
            name, values = str(entry["name"]), entry["values"]
        elif isinstance(entry, list | tuple):
            name, values = None, entry
        else:
            raise sec.err(f"{key}[{i}]", "{name, values} or a list of numbers", entry)
        if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise sec.err(f"{key}[{i}]", "numeric values", values)
        vals = tuple(float(v) for v in values)
        if name is None:
            name = "_".join(([prefix] if prefix else []) + [_fmt(v) for v in vals])
        out.append((name, vals))
    names = [n for n, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise sec.err(key, "distinct point names", dupes)
    return out


def _rename(point: PointYields, regions: Mapping[str, str] | None, source: str) -> PointYields:
    if not regions:
        return point
    missing = [r for r in regions if r not in point.channels]
    if missing:
        raise InputError(
            source, f"point '{point.name}'", f"region(s) {missing} missing; present: {sorted(point.channels)}"
        )
    return PointYields(point.name, point.values, {ch: point.channels[r] for r, ch in regions.items()})


# --------------------------------------------------------------------------------------------- types
def _from_yields(sec: _Section, parameters: Sequence[str] | None) -> SignalPoints:
    from recastfit.signals.yields_file import read_yields_file

    path = sec.path("path")
    params, points = read_yields_file(path)
    regions = sec.mapping("regions")
    points = [_rename(p, regions, str(path)) for p in points]
    return SignalPoints(list(params) if params else None, points)


def _txname(sec: _Section, folder: Path, regions: Mapping[str, str]) -> str:
    name = sec.string("txname")
    if name:
        return name
    names = {p.stem for r in regions for p in (folder / r).glob("*.txt") if p.name != "dataInfo.txt"}
    if len(names) != 1:
        raise sec.err("txname", f"the map name (found {sorted(names) or 'none'} in the region folders)")
    return names.pop()


def _from_effmap(sec: _Section, parameters: Sequence[str] | None) -> SignalPoints:
    from recastfit.signals.effmap import effmap_yields, parse_lumi, read_effmap, read_global_info
    from recastfit.signals.xsec import load_xsec_table

    folder = sec.path("path")
    info_path = folder / "globalInfo.txt"
    info = read_global_info(info_path) if info_path.is_file() else None
    regions = sec.mapping("regions") or (info.regions if info else None)
    if not regions:
        raise sec.err("regions", "a mapping {smodels region: workspace channel} (globalInfo.txt has none)")
    if sec.has("lumi"):
        try:
            lumi = parse_lumi(sec.raw["lumi"], sec.file)
        except InputError:
            raise sec.err("lumi", "a luminosity such as 139 or '139/fb'", sec.raw["lumi"]) from None
    elif info and info.lumi_fb:
        lumi = info.lumi_fb
    else:
        raise sec.err("lumi", "a luminosity such as '139/fb' (globalInfo.txt has none)")
    for region in regions:
        if not (folder / region).is_dir():
            raise sec.err(f"regions.{region}", f"a region folder inside {folder}", str(folder / region))
    txname = _txname(sec, folder, regions)
    maps = {}
    for region, channel in regions.items():
        f = folder / region / f"{txname}.txt"
        if not f.is_file():
            raise sec.err(f"regions.{region}", f"a region folder holding {txname}.txt", str(f))
        maps[channel] = read_effmap(f, region)
    xsec = load_xsec_table(sec.path("xsec"))
    mass_idx = _param_index(sec, "xsec_mass", sec.raw.get("xsec_mass", 0), parameters)
    on_range = sec.string("on_xsec_range", "error")
    if on_range not in ("error", "skip"):
        raise sec.err("on_xsec_range", "error or skip", on_range)
    requested = [v for _, v in _point_list(sec, "points")] if sec.has("points") else None
    window = _window(sec, parameters)
    if requested is None and window:
        from recastfit.signals.effmap import EfficiencyMap

        maps = {
            ch: EfficiencyMap(
                m.region, m.txname, {k: v for k, v in m.values.items() if _in_window(k, window)}, m.source
            )
            for ch, m in maps.items()
        }
    kwargs = dict(
        lumi_fb=lumi,
        xsec_mass=mass_idx,
        xsec_scale=sec.number("xsec_scale", 1.0, minimum=0.0),
        floor=sec.number("floor", 1e-6, minimum=0.0),
        name_prefix=sec.string("name_prefix", txname),
    )
    result = effmap_yields(maps, xsec, points=requested, on_xsec_range=on_range, **kwargs)
    points = [p for p in result.points if _in_window(p.values, window)]
    return SignalPoints(None, points, result.skipped)


def _from_root(sec: _Section, parameters: Sequence[str] | None) -> SignalPoints:
    from recastfit.signals.root_hists import list_points, read_root_grid, read_root_point, values_from_name

    raw_path = sec.string("path", required=True)
    per_point = "{point}" in raw_path
    pattern = sec.string("histogram", "{region}" if per_point else "{point}/{region}")
    if "{region}" not in pattern:
        raise sec.err("histogram", "a pattern containing {region}", pattern)
    regions = sec.mapping("regions")
    nparams = len(parameters) if parameters else 2
    if sec.has("points"):
        points = _point_list(sec, "points")
    elif per_point:
        full = raw_path if Path(raw_path).is_absolute() else str(sec.base / raw_path)
        regex = re.compile("^" + re.escape(full).replace(re.escape("{point}"), "(?P<point>[^/]+)") + "$")
        files = sorted(Path("/").glob(full.replace("{point}", "*").lstrip("/")))
        names = [m.group("point") for f in files if (m := regex.match(str(f)))]
        if not names:
            raise sec.err("path", "a file pattern matching at least one file", full)
        points = [(n, values_from_name(n, nparams, source=full)) for n in names]
    else:
        path = sec.path("path")
        points = [(n, values_from_name(n, nparams, source=str(path))) for n in list_points(path, pattern)]
    window = _window(sec, parameters)
    points = [(n, v) for n, v in points if _in_window(v, window)]
    if per_point:
        out = []
        for name, values in points:
            f = Path(raw_path.replace("{point}", name))
            f = f if f.is_absolute() else sec.base / f
            out.append(read_root_point(f, name, values, pattern=pattern, regions=regions))
    else:
        out = read_root_grid(sec.path("path"), points, pattern=pattern, regions=regions)
    return SignalPoints(None, out)


def recast_points(
    section: Mapping[str, Any], *, config_file: str, base_dir: Path, parameters: Sequence[str] | None = None
) -> list[tuple[str, tuple[float, ...]]]:
    """The (name, values) of every point the ``recast`` rule runs (validated; window applied)."""
    sec = _Section(section, config_file, base_dir)
    _check_keys(sec, "recast")
    if not sec.has("points"):
        raise sec.err("points", "this key to be present: [{name, values}, ...], a file of them, or 'demo'")
    window = _window(sec, parameters)
    return [(n, v) for n, v in _point_list(sec, "points") if _in_window(v, window)]


def recast_settings(section: Mapping[str, Any], *, config_file: str, base_dir: Path) -> dict[str, Any]:
    """Validated keyword arguments of :func:`recastfit.signals.recast.run_point` (all but the point)."""
    sec = _Section(section, config_file, base_dir)
    _check_keys(sec, "recast")
    spec = sec.path("spec")
    workflow = sec.string("workflow", "workflow.yml")
    if not (spec / workflow).is_file():
        raise sec.err("workflow", f"a workflow file inside {spec}", workflow)
    inputs = sec.mapping("inputs")
    timeout = sec.number("timeout", None, minimum=1.0)
    return {
        "spec_dir": spec,
        "workflow": workflow,
        "inputs": inputs,
        "output": sec.string("output"),
        "regions": sec.mapping("regions"),
        "histogram": sec.string("histogram", "{region}"),
        "backend": sec.string("backend"),
        "timeout": timeout,
    }


def _from_recast(sec: _Section, parameters: Sequence[str] | None, results_dir: Path | None) -> SignalPoints:
    from recastfit.signals.recast import run_point
    from recastfit.signals.yields_file import read_yields_file

    points = recast_points(sec.raw, config_file=sec.file, base_dir=sec.base, parameters=parameters)
    if sec.has("yields_dir"):
        ydir = sec.path("yields_dir", must_exist=False)
    elif results_dir is not None:
        ydir = Path(results_dir) / "yields"
    else:
        raise sec.err("yields_dir", "a folder for yields/<point>.json (no results folder was given)")
    settings = recast_settings(sec.raw, config_file=sec.file, base_dir=sec.base)
    out = []
    for name, values in points:
        f = ydir / f"{name}.json"
        if not f.is_file():  # outside Snakemake: run the workflow here
            if not parameters or len(parameters) != len(values):
                raise sec.err("points", f"values matching the grid parameters {list(parameters or [])}", name)
            run_point(name=name, values=dict(zip(parameters, values, strict=True)), out=f, **settings)
        _, pts = read_yields_file(f)
        p = pts[0]
        if p.name != name:
            raise InputError(str(f), "name", f"expected point '{name}', got '{p.name}'")
        out.append(PointYields(name, values, p.channels))
    return SignalPoints(list(parameters) if parameters else None, out)


def load_signal_points(
    section: Mapping[str, Any],
    *,
    config_file: str,
    base_dir: Path,
    bkg_spec: dict,
    parameters: Sequence[str] | None = None,
    results_dir: Path | None = None,
) -> SignalPoints:
    """Read the new signal named by a config ``signal:`` section (types yields, effmap, root, recast).

    Channels are checked against ``bkg_spec`` here so that a wrong region name fails with the
    config key that set it. ``parameters`` (the grid's parameter names) resolve ``xsec_mass`` and
    ``window`` by name and name the recast inputs; ``results_dir`` holds ``yields/`` for ``recast``.
    """
    if not isinstance(section, Mapping):
        raise ConfigError(config_file, "signal", "a mapping with a 'type' key", section)
    kind = section.get("type")
    if kind not in SOURCE_KEYS:
        raise ConfigError(config_file, "signal.type", f"one of {', '.join(SOURCE_KEYS)}", kind)
    sec = _Section(section, config_file, base_dir)
    _check_keys(sec, kind)
    if kind == "yields":
        found = _from_yields(sec, parameters)
    elif kind == "effmap":
        found = _from_effmap(sec, parameters)
    elif kind == "root":
        found = _from_root(sec, parameters)
    else:
        found = _from_recast(sec, parameters, results_dir)
    window = _window(sec, parameters)
    found.points = [p for p in found.points if _in_window(p.values, window)]
    channels = {c["name"] for c in bkg_spec.get("channels", [])}
    for p in found.points:
        unknown = sorted(set(p.channels) - channels)
        if unknown:
            key = (
                "signal.regions" if sec.has("regions") else f"signal.{'path' if sec.has('path') else 'type'}"
            )
            raise InputError(
                config_file,
                key,
                f"point '{p.name}': channel(s) {unknown} not in the workspace; "
                f"its channels are {sorted(channels)}",
            )
    if not found.points:
        reasons = "; ".join(f"{n}: {r}" for n, r in found.skipped[:5])
        raise InputError(
            config_file, "signal", "no signal points left" + (f" (skipped: {reasons})" if reasons else "")
        )
    return found
