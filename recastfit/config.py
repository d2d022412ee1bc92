"""Typed, validated workflow configuration (YAML); a bad config fails before any fit."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from recastfit.errors import ConfigError
from recastfit.patches import SignalOptions
from recastfit.results import FitSettings

__all__ = ["Config", "load_config", "parse_config", "schema"]


def schema() -> dict:
    """The JSON schema of the config (``workflows/schemas/config.schema.yaml``)."""
    text = resources.files("recastfit.workflow").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


@dataclass(frozen=True)
class Config:
    """The validated configuration; sections owned by other modules stay plain dicts."""

    file: str
    analysis: str
    output: Path
    demo: Path | None
    pallet: dict[str, Any]
    signal: dict[str, Any]
    signal_options: SignalOptions
    parameters: list[str]
    units: list[str]
    labels: list[str]
    name_pattern: str | None
    fit: FitSettings
    backend: dict[str, Any] = field(default_factory=dict)
    contour: dict[str, Any] = field(default_factory=dict)

    @property
    def results_dir(self) -> Path:
        return self.output / self.analysis


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = error.message.split("'")[1]
        parts.append(missing)
    elif error.validator == "additionalProperties":
        extra = error.message.split("'")[1]
        parts.append(extra)
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


def parse_config(data: Any, file: str = "config.yaml") -> Config:
    """Validate a config mapping and build :class:`Config`, or raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(file, "<top level>", "a mapping of sections", type(data).__name__)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        err = errors[0]
        got = None if err.validator in ("required", "additionalProperties") else err.instance
        raise ConfigError(file, _key_path(err), _expected(err), got)
    grid = data["grid"]
    params = list(grid["parameters"])
    for key in ("units", "labels"):
        if key in grid and len(grid[key]) != len(params):
            raise ConfigError(file, f"grid.{key}", f"one entry per parameter {params}", grid[key])
    units = list(grid.get("units") or [""] * len(params))
    signal = dict(data["signal"])
    try:
        options = SignalOptions(
            **{
                **signal.get("options", {}),
                "replace_samples": tuple(signal.get("options", {}).get("replace_samples", ())),
            }
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(file, "signal.options", "valid signal options", str(exc)) from None
    fit = FitSettings(**data.get("fit", {}))
    from recastfit.backends.base import BackendConfig  # validates every backend key, naming it

    BackendConfig.from_dict(data.get("backend"), file=file)
    demo = data.get("demo")
    return Config(
        file=file,
        analysis=data["analysis"],
        output=Path(data.get("output", "results")),
        demo=Path(demo) if demo else None,
        pallet=dict(data["pallet"]),
        signal=signal,
        signal_options=options,
        parameters=params,
        units=units,
        labels=list(
            grid.get("labels") or [f"{p} [{u}]" if u else p for p, u in zip(params, units, strict=True)]
        ),
        name_pattern=grid.get("name_pattern"),
        fit=fit,
        backend=dict(data.get("backend", {})),
        contour=dict(data.get("contour", {})),
    )


def load_config(path: Path | str) -> Config:
    """Read and validate a YAML (or JSON) config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "<file>", "an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "<file>", "valid YAML", str(exc)) from None
    return parse_config(data, str(path))
