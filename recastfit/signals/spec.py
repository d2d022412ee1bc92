"""The config's ``signal:`` section as typed, frozen dataclasses (:func:`parse_signal`).

The JSON schema (``workflows/schemas/config.schema.yaml``, block ``signal``) fixes which keys
each ``signal.type`` takes and their types; :func:`parse_signal` checks it again (so a section
from any caller is held to it) and then what a schema cannot say: window and ``xsec_mass``
parameters that exist, point names and values (finite, distinct, one per grid parameter), a
luminosity that parses, SLHA settings that fit together and, with ``check_paths``, that the
files named exist. Every error is a :class:`~recastfit.errors.ConfigError` naming the file and
``signal.<key>``.

>>> spec = parse_signal({"type": "yields", "path": "y.json"}, file="c.yaml", parameters=["m1", "m2"],
...                     base_dir=Path("/data"), check_paths=False)
>>> spec.path, spec.regions
(PosixPath('/data/y.json'), None)
>>> try:
...     parse_signal({"type": "yields", "path": "y.json", "xsex": 1}, file="c.yaml", parameters=[],
...                  base_dir=Path("."), check_paths=False)
... except ConfigError as exc:
...     print(exc.key, "|", exc.expected)
signal.xsex | no such key for type 'yields' (allowed: options, path, regions, type, window)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from recastfit.errors import ConfigError, InputError
from recastfit.names import name_problem
from recastfit.patches import SignalOptions
from recastfit.signals.model import MAX_ABS, format_value

__all__ = [
    "SIGNAL_TYPES",
    "Window",
    "PointDef",
    "SignalSpec",
    "PatchsetSignal",
    "PatchFolderSignal",
    "YieldsSignal",
    "EffmapSignal",
    "RootSignal",
    "RecastSignal",
    "XsecProcess",
    "parse_signal",
    "signal_schema",
    "point_defs",
]

SIGNAL_TYPES = ("patchset", "patch_folder", "yields", "effmap", "root", "recast")

#: (parameter index, lo, hi): keep points whose value at ``index`` lies in [lo, hi]
Window = tuple[tuple[int, float, float], ...]


@dataclass(frozen=True)
class PointDef:
    """A grid point named in the config or a points file: its name and one value per parameter.

    ``auto_name``: the name was made from the values (the source may add its own prefix).
    """

    name: str
    values: tuple[float, ...]
    auto_name: bool = False


@dataclass(frozen=True)
class SignalSpec:
    """What every signal type shares: the config file (for errors), patch options, window."""

    file: str
    options: SignalOptions = field(default_factory=SignalOptions)
    window: Window = ()

    type: str = field(default="", init=False)

    def err(self, key: str, expected: str, got: object = None) -> ConfigError:
        """A :class:`ConfigError` for ``signal.<key>`` of this config file."""
        return ConfigError(self.file, f"signal.{key}", expected, got)

    def in_window(self, values: Sequence[float]) -> bool:
        """True when ``values`` lie inside every window bound."""
        return all(i < len(values) and lo <= values[i] <= hi for i, lo, hi in self.window)


@dataclass(frozen=True)
class PatchsetSignal(SignalSpec):
    """A published pyhf PatchSet (``path`` None: the pallet's)."""

    path: Path | None = None
    type: str = field(default="patchset", init=False)


@dataclass(frozen=True)
class PatchFolderSignal(SignalSpec):
    """A folder of ``patch.<name>.json`` RFC 6902 lists (``path`` None: the pallet's)."""

    path: Path | None = None
    type: str = field(default="patch_folder", init=False)


@dataclass(frozen=True)
class YieldsSignal(SignalSpec):
    """A yields file; ``regions`` renames (and selects) its channels."""

    path: Path = Path()
    regions: dict[str, str] | None = None
    type: str = field(default="yields", init=False)


@dataclass(frozen=True)
class XsecProcess:
    """Which SLHA XSECTION blocks give a point's cross section (several final states are summed)."""

    final: tuple[tuple[int, ...], ...]
    initial: tuple[int, int] | None = None
    sqrts: float | None = None


@dataclass(frozen=True)
class EffmapSignal(SignalSpec):
    """SModelS efficiency maps x cross section x luminosity.

    The cross section comes from ``xsec`` (a table, ``xsec_mass`` picks its mass) or, with
    ``slha``, from each SLHA file's XSECTION blocks (``xsec_process``); SLHA files also give
    the grid values (MASS block, ``masses``: parameter -> PDG id, one per grid parameter).
    """

    path: Path = Path()
    xsec: Path | None = None
    slha: Path | None = None
    masses: tuple[int, ...] | None = None
    xsec_process: XsecProcess | None = None
    txname: str | None = None
    workspace: str | None = None
    regions: dict[str, str] | None = None
    lumi_fb: float | None = None
    xsec_mass: int = 0
    xsec_scale: float = 1.0
    floor: float = 1e-6
    points: tuple[PointDef, ...] | Path | None = None
    on_xsec_range: Literal["error", "skip"] = "error"
    name_prefix: str | None = None
    type: str = field(default="effmap", init=False)


@dataclass(frozen=True)
class RootSignal(SignalSpec):
    """ROOT histograms: ``path`` may hold ``{point}`` (one file per point)."""

    path: str = ""
    histogram: str | None = None
    regions: dict[str, str] | None = None
    points: tuple[PointDef, ...] | Path | None = None
    base_dir: Path = Path()
    type: str = field(default="root", init=False)


@dataclass(frozen=True)
class RecastSignal(SignalSpec):
    """A preserved analysis re-run per point by the ``recast`` rule (yadage)."""

    spec: Path = Path()
    points: tuple[PointDef, ...] | Path = ()
    workflow: str = "workflow.yml"
    inputs: dict[str, str] | None = None
    output: str | None = None
    regions: dict[str, str] | None = None
    histogram: str = "{region}"
    backend: str | None = None
    timeout: float | None = None
    yields_dir: Path | None = None
    type: str = field(default="recast", init=False)


# ------------------------------------------------------------------------------------------ schema
@cache
def signal_schema() -> dict:
    """The ``signal`` block of the config schema (read from the package's schema file)."""
    from recastfit.fileio import load_yaml_text

    text = resources.files("recastfit.workflow").joinpath("schemas/config.schema.yaml").read_text()
    return load_yaml_text(text, "config.schema.yaml")["properties"]["signal"]


def _schema_error(file: str, section: Mapping[str, Any]) -> ConfigError | None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(signal_schema())
    errors = list(validator.iter_errors(dict(section)))
    if not errors:
        return None

    def leaves(err: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
        return [leaf for sub in err.context for leaf in leaves(sub)] if err.context else [err]

    flat = [leaf for e in errors for leaf in leaves(e)]

    def render(parts) -> str:  # noqa: ANN001 - a deque of keys and indexes
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)

    # the most telling leaf: a stray or missing key first, then the deepest, then not a type error
    err = min(
        flat,
        key=lambda e: (
            e.validator not in ("additionalProperties", "required"),
            -len(e.absolute_path),
            e.validator in ("type", "const"),
        ),
    )
    where = "signal" + render(err.absolute_path)
    got: object = err.instance
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        kind = section.get("type")
        return ConfigError(
            file,
            f"{where}.{extra[0]}",
            f"no such key for type '{kind}' (allowed: {', '.join(allowed)})",
        )
    if err.validator == "required":
        missing = err.message.split("'")[1]
        return ConfigError(file, f"{where}.{missing}", "this key to be present")
    desc = err.schema.get("description")
    if err.validator == "enum":
        expected = "one of " + ", ".join(map(str, err.validator_value))
    elif err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        expected = f"a finite number ({err.message.split(' is ', 1)[-1]})"
    elif err.validator == "type":
        kinds = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        expected = " or ".join(
            {"number": "a number (booleans are not numbers)", "integer": "an integer", "null": "null"}.get(
                k, f"a {k}"
            )
            for k in kinds
        )
        expected = f"{desc}: {expected}" if desc else expected
    else:
        expected = desc or err.message
    if isinstance(got, str | int | float) or got is None:
        return ConfigError(file, where, expected, got)
    return ConfigError(file, where, expected, _short(got))


def _not_finite(value: object, where: str) -> str | None:
    """The key of the first NaN or infinite number inside ``value`` (JSON schema lets NaN through)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, Mapping):
        return next((w for k, v in value.items() if (w := _not_finite(v, f"{where}.{k}"))), None)
    if isinstance(value, list | tuple):
        return next((w for i, v in enumerate(value) if (w := _not_finite(v, f"{where}[{i}]"))), None)
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------------------ values
def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and abs(x) <= MAX_ABS


def point_defs(
    raw: object, *, file: str, key: str, parameters: Sequence[str], prefix: str = "", config: bool = True
) -> tuple[PointDef, ...]:
    """Validated points from ``[{name, values}]`` or ``[[v1, v2], ...]`` (names made from the values).

    Names follow :mod:`recastfit.names`; values are finite numbers (|x| <= 1e15), one per
    parameter when ``parameters`` is given; names and value tuples are distinct.
    ``config``: errors are :class:`ConfigError` (a config key) else :class:`InputError` (a file).

    >>> [(p.name, p.values) for p in point_defs([[100, 20], {"name": "b", "values": [200, 20]}],
    ...                                          file="c", key="points", parameters=[])]
    [('100_20', (100.0, 20.0)), ('b', (200.0, 20.0))]
    """

    def fail(where: str, expected: str, got: object) -> Exception:
        if config:
            return ConfigError(file, where, expected, _short(got) if not isinstance(got, str) else got)
        return InputError(file, where, f"expected {expected}, got {_short(got)}")

    if not isinstance(raw, list | tuple) or not raw:
        raise fail(key, "a non-empty list of {name, values} or [v1, v2, ...] entries", raw)
    out: list[PointDef] = []
    for i, entry in enumerate(raw):
        where = f"{key}[{i}]"
        if isinstance(entry, Mapping):
            extra = sorted(set(entry) - {"name", "values"})
            if extra or "values" not in entry:
                raise fail(where, "a mapping {name, values}", entry)
            name, values = entry.get("name"), entry["values"]
        elif isinstance(entry, list | tuple):
            name, values = None, entry
        else:
            raise fail(where, "{name, values} or a list of numbers", entry)
        if not isinstance(values, list | tuple) or not values or not all(_number(v) for v in values):
            raise fail(
                f"{where}.values", f"finite numbers (booleans are not numbers, |x| <= {MAX_ABS:g})", values
            )
        vals = tuple(float(v) for v in values)
        if parameters and len(vals) != len(parameters):
            raise fail(f"{where}.values", f"one value per grid parameter {list(parameters)}", values)
        auto = name is None
        if name is None:
            name = "_".join(([prefix] if prefix else []) + [format_value(v) for v in vals])
        problem = name_problem(name)
        if problem is not None:
            expected = f"a name made of {problem}" if problem.startswith("letters") else problem
            raise fail(f"{where}.name", expected, name)
        out.append(PointDef(name, vals, auto))
    for attr, what in (("name", "distinct point names"), ("values", "distinct point values")):
        seen: dict[object, int] = {}
        for i, p in enumerate(out):
            k = getattr(p, attr)
            if k in seen:
                raise fail(
                    f"{key}[{i}]", f"{what} (same as {key}[{seen[k]}])", p.name if attr == "name" else k
                )
            seen[k] = i
    return tuple(out)


# ------------------------------------------------------------------------------------------ parsing
class _Reader:
    """The section's values, each checked; errors name ``signal.<key>`` of ``file``."""

    def __init__(self, section: Mapping[str, Any], file: str, base: Path, params: Sequence[str], check: bool):
        self.raw, self.file, self.base, self.params, self.check = section, file, base, list(params), check

    def err(self, key: str, expected: str, got: object = None) -> ConfigError:
        return ConfigError(self.file, f"signal.{key}", expected, got)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.raw.get(key)
        return default if value is None else value

    def path(self, key: str, *, kind: str = "exists", required: bool = False) -> Path | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.err(key, "this key to be present")
            return None
        p = Path(value)
        p = p if p.is_absolute() else self.base / p
        if self.check:
            ok = {"exists": p.exists(), "file": p.is_file(), "dir": p.is_dir(), "any": True}[kind]
            if not ok:
                what = {"file": " (a file)", "dir": " (a folder)"}.get(kind, "")
                raise self.err(key, f"an existing path{what}", str(p))
        return p

    def param_index(self, key: str, value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            if self.params and not 0 <= value < len(self.params):
                raise self.err(key, f"an index into the grid parameters {self.params}", value)
            return value
        if isinstance(value, str) and value in self.params:
            return self.params.index(value)
        raise self.err(key, f"a grid parameter name {self.params} or an index", value)

    def window(self) -> Window:
        raw = self.raw.get("window")
        if raw is None:
            return ()
        out = []
        for name, bounds in raw.items():
            idx = self.param_index(f"window.{name}", name)
            lo, hi = (float(b) for b in bounds)
            if lo > hi:
                raise self.err(f"window.{name}", "[lo, hi] with lo <= hi", bounds)
            out.append((idx, lo, hi))
        return tuple(out)

    def regions(self) -> dict[str, str] | None:
        raw = self.raw.get("regions")
        return None if raw is None else {str(k): str(v) for k, v in raw.items()}

    def points(self, key: str, *, prefix: str = "") -> tuple[PointDef, ...] | Path | None:
        raw = self.raw.get(key)
        if raw is None:
            return None
        if isinstance(raw, str):
            return self.path(key, kind="file")
        return point_defs(raw, file=self.file, key=f"signal.{key}", parameters=self.params, prefix=prefix)


def _options(r: _Reader) -> SignalOptions:
    raw = dict(r.raw.get("options") or {})
    if "replace_samples" in raw:
        raw["replace_samples"] = tuple(raw["replace_samples"])
    try:
        return SignalOptions(**raw)
    except (TypeError, ValueError) as exc:
        raise r.err("options", "valid signal options", str(exc)) from None


def _lumi(r: _Reader) -> float | None:
    from recastfit.signals.effmap import parse_lumi

    value = r.raw.get("lumi")
    if value is None:
        return None
    try:
        return parse_lumi(value, r.file)
    except InputError:
        raise r.err("lumi", "a luminosity such as 139 or '139/fb'", value) from None


def _xsec_process(r: _Reader) -> XsecProcess | None:
    raw = r.raw.get("xsec_process")
    if raw is None:
        return None
    final = raw["final"]
    states = [tuple(final)] if all(isinstance(f, int) for f in final) else None
    if states is None:
        if not all(isinstance(f, list) for f in final):
            raise r.err("xsec_process.final", "PDG ids [a, b] or a list of final states [[a, b], ...]", final)
        states = [tuple(f) for f in final]
    initial = tuple(raw["initial"]) if raw.get("initial") is not None else None
    sqrts = float(raw["sqrts"]) if raw.get("sqrts") is not None else None
    return XsecProcess(tuple(states), initial, sqrts)  # type: ignore[arg-type]


def _effmap(r: _Reader, common: dict[str, Any]) -> EffmapSignal:
    slha = r.path("slha", kind="dir")
    xsec = r.path("xsec", kind="file")
    if slha is None and xsec is None:
        raise r.err("xsec", "a cross-section table (or signal.slha: a folder of SLHA files)")
    masses = None
    process = _xsec_process(r)
    if slha is not None:
        if xsec is not None:
            raise r.err("xsec", "no cross-section table with signal.slha (SLHA files carry XSECTION blocks)")
        if r.raw.get("points") is not None:
            raise r.err("points", "no points with signal.slha (the SLHA files are the points)")
        raw = r.raw.get("masses")
        if raw is None:
            raise r.err("masses", "{grid parameter: PDG id} for every grid parameter (signal.slha is set)")
        if r.params and list(raw) != r.params:
            raise r.err("masses", f"one PDG id per grid parameter, in order {r.params}", raw)
        masses = tuple(int(v) for v in raw.values())
        if process is None:
            raise r.err("xsec_process", "{sqrts, initial, final}: the XSECTION process (signal.slha is set)")
    else:
        for key in ("masses", "xsec_process"):
            if r.raw.get(key) is not None:
                raise r.err(key, "no such key without signal.slha", r.raw[key])
    on_range = r.get("on_xsec_range", "error")
    prefix = r.raw.get("name_prefix")
    if prefix:
        problem = name_problem(prefix)
        if problem is not None:
            raise r.err("name_prefix", f"a name made of {problem}", prefix)
    return EffmapSignal(
        **common,
        path=r.path("path", kind="dir", required=True),  # type: ignore[arg-type]
        xsec=xsec,
        slha=slha,
        masses=masses,
        xsec_process=process,
        txname=r.raw.get("txname"),
        workspace=r.raw.get("workspace"),
        regions=r.regions(),
        lumi_fb=_lumi(r),
        xsec_mass=r.param_index("xsec_mass", r.get("xsec_mass", 0)),
        xsec_scale=float(r.get("xsec_scale", 1.0)),
        floor=float(r.get("floor", 1e-6)),
        points=r.points("points"),
        on_xsec_range=on_range,
        name_prefix=prefix,
    )


def _recast(r: _Reader, common: dict[str, Any]) -> RecastSignal:
    spec = r.path("spec", kind="dir", required=True)
    workflow = r.get("workflow", "workflow.yml")
    if r.check and not (spec / workflow).is_file():  # type: ignore[operator]
        raise r.err("workflow", f"a workflow file inside {spec}", workflow)
    inputs = r.raw.get("inputs")
    timeout = r.raw.get("timeout")
    return RecastSignal(
        **common,
        spec=spec,  # type: ignore[arg-type]
        points=r.points("points"),  # type: ignore[arg-type]
        workflow=workflow,
        inputs={str(k): str(v) for k, v in inputs.items()} if inputs else None,
        output=r.raw.get("output"),
        regions=r.regions(),
        histogram=r.get("histogram", "{region}"),
        backend=r.raw.get("backend"),
        timeout=float(timeout) if timeout is not None else None,
        yields_dir=r.path("yields_dir", kind="any"),
    )


def parse_signal(
    section: Mapping[str, Any],
    *,
    file: str,
    parameters: Sequence[str],
    base_dir: Path,
    check_paths: bool = True,
) -> SignalSpec:
    """The typed form of a config ``signal:`` section (relative paths resolved against ``base_dir``).

    ``parameters``: the grid's parameter names (resolve ``window``/``xsec_mass`` by name and
    check point values). ``check_paths``: also check that the files and folders named exist
    (the config loader passes False; the patches step checks them).
    """
    if not isinstance(section, Mapping):
        raise ConfigError(file, "signal", "a mapping with a 'type' key", _short(section))
    bad = _not_finite(section, "signal")
    if bad is not None:
        raise ConfigError(file, bad, f"a finite number (|x| <= {MAX_ABS:g})", "nan or inf")
    error = _schema_error(file, section)
    if error is not None:
        raise error
    r = _Reader(section, file, Path(base_dir), parameters, check_paths)
    common: dict[str, Any] = {"file": file, "options": _options(r), "window": r.window()}
    kind = section["type"]
    if kind == "patchset":
        return PatchsetSignal(**common, path=r.path("path", kind="file"))
    if kind == "patch_folder":
        return PatchFolderSignal(**common, path=r.path("path", kind="dir"))
    if kind == "yields":
        return YieldsSignal(**common, path=r.path("path", kind="file", required=True), regions=r.regions())  # type: ignore[arg-type]
    if kind == "effmap":
        return _effmap(r, common)
    if kind == "root":
        raw_path = section["path"]
        if "{point}" not in raw_path:
            r.path("path", kind="file")
        return RootSignal(
            **common,
            path=raw_path,
            histogram=section.get("histogram"),
            regions=r.regions(),
            points=r.points("points"),
            base_dir=Path(base_dir),
        )
    return _recast(r, common)
