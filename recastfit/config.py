"""One config model: the JSON schema validates every key, applies its defaults once, and the result
is a typed, frozen :class:`Config`. Every mistake is reported at load, naming the user's file.

>>> cfg = parse_config({"analysis": "a", "pallet": {"source": "p"}, "signal": {"type": "patchset"},
...                     "grid": {"parameters": ["m1", "m2"]}}, "my.yaml")
>>> cfg.output.as_posix(), cfg.fit.engine, cfg.run.timeout, cfg.run.jobs
('results', 'pyhf', 300.0, 1)
>>> parse_config({"analysis": "../up", "pallet": {"source": "p"}, "signal": {"type": "patchset"},
...               "grid": {"parameters": ["m"]}}, "my.yaml")
Traceback (most recent call last):
...
recastfit.errors.ConfigError: my.yaml: key 'analysis': expected a name made of letters, digits and \
'_.+-' only, starting with a letter or digit, got '../up'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jsonschema

from recastfit.errors import ConfigError, InputError
from recastfit.fileio import load_yaml_file, load_yaml_text
from recastfit.names import check_name
from recastfit.patches import SignalOptions
from recastfit.results import FitSettings

__all__ = [
    "Config",
    "FitRun",
    "GridSpec",
    "PalletSpec",
    "RunConfig",
    "load_config",
    "load_run",
    "parse_config",
    "parse_run",
    "schema",
]

Engine = Literal["pyhf", "fast"]


def schema(name: str = "config") -> dict:
    """The JSON schema ``workflows/schemas/<name>.schema.yaml`` (``config`` or ``run``)."""
    text = resources.files("recastfit.workflow").joinpath(f"schemas/{name}.schema.yaml").read_text()
    return load_yaml_text(text, f"{name}.schema.yaml")


@dataclass(frozen=True)
class PalletSpec:
    """Where the background-only workspace and published patches come from."""

    source: str
    resource: str | None = None
    analysis: str | None = None
    hepdata_url: str | None = None
    doi_url: str | None = None
    cache_dir: str | None = None
    offline: bool = False
    sha256: str | None = None


@dataclass(frozen=True)
class GridSpec:
    """The theory grid's axes."""

    parameters: tuple[str, ...]
    units: tuple[str, ...]
    labels: tuple[str, ...]
    name_pattern: str | None = None


@dataclass(frozen=True)
class FitRun:
    """How the fit step runs (budgets and fan-out); not part of a result's identity."""

    timeout: float = 300.0  # seconds per point, enforced from outside the computing process
    jobs: int = 1  # Snakemake jobs the fit is split into (scatter/gather)
    threads: int = 2  # threads (cores) per fit job
    max_memory_mb: int = 2048  # per worker; the watchdog restarts a worker above it


@dataclass(frozen=True)
class Config:
    """A validated single-analysis configuration (defaults applied)."""

    file: str
    analysis: str
    output: Path
    demo: Path | None
    quiet: bool
    pallet_spec: PalletSpec
    signal: dict[str, Any]
    signal_spec: Any  # recastfit.signals.spec.SignalSpec (typed; paths checked when the step runs)
    signal_options: SignalOptions
    grid: GridSpec
    fit: FitSettings
    run: FitRun
    backend: dict[str, Any] = field(default_factory=dict)
    contour: dict[str, Any] = field(default_factory=dict)
    scan: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def results_dir(self) -> Path:
        return self.output / self.analysis

    @property
    def pallet(self) -> dict[str, Any]:
        return dict(self.raw.get("pallet", {}))

    @property
    def parameters(self) -> list[str]:
        return list(self.grid.parameters)

    @property
    def units(self) -> list[str]:
        return list(self.grid.units)

    @property
    def labels(self) -> list[str]:
        return list(self.grid.labels)

    @property
    def name_pattern(self) -> str | None:
        return self.grid.name_pattern

    def contour_options(self) -> Any:
        """The typed contour/figure/HEPData options (:class:`recastfit.contour.ContourOptions`)."""
        from recastfit.contour import ContourOptions

        return ContourOptions.from_dict(self.contour, file=self.file)

    def backend_config(self) -> Any:
        """The typed back-end configuration (:class:`recastfit.backends.BackendConfig`)."""
        from recastfit.backends import BackendConfig

        return BackendConfig.from_dict(self.backend, file=self.file)


@dataclass(frozen=True)
class RunConfig:
    """Several analyses in one run (``analyses: [a.yaml, b.yaml]``), drawn on one overlay figure."""

    file: str
    output: Path
    configs: tuple[Config, ...]
    overlay: dict[str, Any] = field(default_factory=dict)

    def by_name(self) -> dict[str, Config]:
        return {c.analysis: c for c in self.configs}


# ---------------------------------------------------------------------------------------------------
# validation


def _with_defaults(cls: Any) -> Any:
    """A validator class that also fills in each property's ``default`` (jsonschema FAQ recipe)."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema_: dict) -> Any:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema_)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator in ("required", "additionalProperties") and "'" in error.message:
        parts.append(error.message.split("'")[1])
    return ".".join(parts) or "<top level>"


def _expected(error: jsonschema.ValidationError) -> str:
    if error.validator == "required":
        return "this key to be present"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"no such key (allowed: {', '.join(allowed)})"
    desc = error.schema.get("description")
    if error.validator == "enum":
        return "one of " + ", ".join(map(str, error.validator_value))
    if error.validator == "type":
        kind = error.validator_value
        return f"{desc} (type {kind})" if desc else f"type {kind}"
    return desc or error.message


def _shown(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 120 else text[:117] + "..."


def _finite(value: Any, file: str, path: str) -> None:
    """Refuse NaN and infinities anywhere in the config (YAML's ``.nan``/``.inf``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(file, path or "<top level>", "a finite number", value)
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, file, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, file, f"{path}[{i}]")


def _validate(data: Any, file: str, schema_name: str = "config") -> dict[str, Any]:
    """Schema-validate ``data`` (a copy, with defaults filled in) or raise the first error."""
    if not isinstance(data, dict):
        raise ConfigError(file, "<top level>", "a mapping of sections", type(data).__name__)
    data = _copy(data)
    _finite(data, file, "")
    if schema_name == "config" and "scan" not in data:  # a grid analysis (else a scan-only config)
        for key in ("analysis", "pallet", "signal", "grid"):
            if key not in data:
                raise ConfigError(file, key, "this key to be present")
    errors = sorted(
        _Validator(schema(schema_name)).iter_errors(data), key=lambda e: (len(e.absolute_path), list(e.path))
    )
    if errors:
        err = errors[0]
        got = None if err.validator in ("required", "additionalProperties") else _shown(err.instance)
        raise ConfigError(file, _key_path(err), _expected(err), got)
    return data


def _grid(data: dict[str, Any], file: str) -> GridSpec:
    grid = data["grid"]
    params = tuple(grid["parameters"])
    if len(set(params)) != len(params):
        raise ConfigError(file, "grid.parameters", "distinct names", list(params))
    for key in ("units", "labels"):
        if key in grid and len(grid[key]) != len(params):
            raise ConfigError(file, f"grid.{key}", f"one entry per parameter {list(params)}", grid[key])
    units = tuple(grid.get("units") or [""] * len(params))
    labels = tuple(
        grid.get("labels") or [f"{p} [{u}]" if u else p for p, u in zip(params, units, strict=True)]
    )
    return GridSpec(params, units, labels, grid.get("name_pattern"))


def _check_engine(fit: FitSettings, file: str) -> None:
    if fit.engine == "fast":
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            raise ConfigError(
                file,
                "fit.engine",
                "an installed jax for engine 'fast' (pip install 'recastfit[jax]')",
                "fast",
            )


def parse_config(data: Any, file: str = "config.yaml") -> Config:
    """Validate a config mapping and build :class:`Config`, or raise :class:`ConfigError`."""
    data = _validate(data, file)
    if "analysis" not in data:
        raise ConfigError(file, "analysis", "this key to be present (a scan-only config is read by load_run)")
    analysis = check_name(data["analysis"], file=file, key="analysis", config=True)
    fit_raw = dict(data.get("fit", {}))
    budget = {k: fit_raw.pop(k) for k in ("timeout", "jobs", "threads", "max_memory_mb") if k in fit_raw}
    run = FitRun(**{**budget, "timeout": float(budget.get("timeout", FitRun.timeout))})
    fit = FitSettings(**fit_raw, timeout=run.timeout)
    _check_engine(fit, file)
    signal = dict(data["signal"])
    grid = _grid(data, file)
    from recastfit.signals.spec import parse_signal

    signal_spec = parse_signal(
        signal, file=file, parameters=list(grid.parameters), base_dir=Path.cwd(), check_paths=False
    )
    demo = data.get("demo")
    cfg = Config(
        file=file,
        analysis=analysis,
        output=Path(data["output"]),
        demo=Path(demo) if demo else None,
        quiet=bool(data.get("quiet", False)),
        pallet_spec=PalletSpec(**data["pallet"]),
        signal=signal,
        signal_spec=signal_spec,
        signal_options=signal_spec.options,
        grid=grid,
        fit=fit,
        run=run,
        backend=dict(data.get("backend", {})),
        contour=dict(data.get("contour", {})),
        scan=dict(data["scan"]) if data.get("scan") else None,
        raw=data,
    )
    cfg.backend_config()  # the back end's own checks (what the schema cannot say), naming the file
    cfg.contour_options()
    return cfg


def _read(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "<file>", "an existing YAML file")
    try:
        return load_yaml_file(path, limit_name="max_config_bytes", what="config file")
    except InputError as exc:
        raise ConfigError(str(path), "<file>", "a valid YAML config of bounded size", str(exc)) from None


def load_config(path: Path | str) -> Config:
    """Read (size-capped, YAML aliases refused) and validate a single-analysis config file."""
    return parse_config(_read(path), str(path))


def parse_run(data: Any, file: str, *, base_dir: Path | None = None) -> RunConfig | Config | Any:
    """A run config: ``analyses: [files]`` gives a :class:`RunConfig`, a ``scan:`` section without an
    ``analysis`` a :class:`recastfit.scan.config.ScanConfig`, anything else a :class:`Config`."""
    if isinstance(data, dict) and "scan" in data and "analysis" not in data:
        from recastfit.scan.config import parse_scan_config

        _validate(data, file)  # the one schema; the scan's own checks follow
        return parse_scan_config(data, file)
    if not (isinstance(data, dict) and "analyses" in data):
        return parse_config(data, file)
    data = _validate(data, file, "run")
    base = base_dir or Path.cwd()
    configs: list[Config] = []
    for i, rel in enumerate(data["analyses"]):
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        if not path.is_file():
            raise ConfigError(file, f"analyses[{i}]", "an existing analysis config file", rel)
        cfg = load_config(path)
        configs.append(cfg)
    names = [c.analysis for c in configs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(file, "analyses", "configs with distinct `analysis` names", dupes)
    output = Path(data["output"])
    configs = [_with_output(c, output) for c in configs]
    return RunConfig(file=file, output=output, configs=tuple(configs), overlay=dict(data.get("overlay", {})))


def _with_output(cfg: Config, output: Path) -> Config:
    from dataclasses import replace

    return replace(cfg, output=output)


def load_run(path: Path | str) -> RunConfig | Config:
    """Read a config file that is either one analysis or a list of analyses."""
    return parse_run(_read(path), str(path), base_dir=Path.cwd())
