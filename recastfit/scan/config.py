"""The ``scan:`` section of a config: which yields table, which analyses, where results go.

Validated by the ``scan`` block of ``workflows/schemas/config.schema.yaml`` (the one schema; no
second validator here), then typed as :class:`ScanConfig`. Relative paths are relative to the
folder the command runs in (as every path of the workflow config). Example::

    output: results
    fit: {engine: fast}
    backend: {name: local}
    scan:
      yields: results/scan-example/yields.parquet
      parameters: [m1, m2]
      analyses:
        staus:
          workspace: ../shared/data/pallets/ATLAS-SUSY-2018-04-staus/BkgOnly.json
          columns: {y_sr1: [SR1cut_cuts, 0], y_sr2: [SR2cut_cuts, 0]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recastfit.errors import ConfigError
from recastfit.names import check_name
from recastfit.results import FitSettings

__all__ = ["AnalysisEntry", "ScanConfig", "load_scan_config", "parse_scan_config"]

DEFAULT_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class AnalysisEntry:
    """One analysis of the scan, as configured (the workspace is read when the scan runs)."""

    name: str
    workspace: Path
    columns: dict[str, tuple[str, int]]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScanConfig:
    """A validated scan configuration."""

    file: str
    yields: Path
    analyses: tuple[AnalysisEntry, ...]
    out_dir: Path
    fit: FitSettings = field(default_factory=FitSettings)
    backend: dict[str, Any] = field(default_factory=dict)
    id_column: str | None = None
    parameters: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    level: float = 0.05
    bins: int = 20
    figures: bool = False
    example: dict[str, int] | None = None  # {rows, seed}: the yields table is generated (offline example)

    @property
    def store_path(self) -> Path:
        return self.out_dir / "results.sqlite"

    @property
    def cls_path(self) -> Path:
        return self.out_dir / "cls.parquet"

    @property
    def points_path(self) -> Path:
        return self.out_dir / "points.parquet"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.json"


def scan_schema() -> dict:
    """The ``scan`` block of the config schema (``workflows/schemas/config.schema.yaml``)."""
    from importlib import resources

    from recastfit.fileio import load_yaml_text

    text = resources.files("recastfit.workflow").joinpath("schemas/config.schema.yaml").read_text()
    return load_yaml_text(text, "config.schema.yaml")["properties"]["scan"]


def _schema_errors(section: Any, file: str) -> None:
    import jsonschema

    block = scan_schema()
    validator = jsonschema.Draft202012Validator(block)
    errors = sorted(  # shallowest first; a misspelt key before the key it was meant to be
        validator.iter_errors(section),
        key=lambda e: (len(e.absolute_path), e.validator != "additionalProperties", [str(p) for p in e.path]),
    )
    if not errors:
        return
    err = errors[0]
    key = ".".join(["scan", *(str(p) for p in err.absolute_path)])
    if err.validator in ("required", "additionalProperties"):
        name = err.message.split("'")[1] if "'" in err.message else ""
        what = "this key to be present" if err.validator == "required" else "no such key"
        if err.validator == "additionalProperties":
            what += f" (allowed: {', '.join(sorted(err.schema.get('properties', {})))})"
        raise ConfigError(file, f"{key}.{name}" if name else key, what)
    raise ConfigError(file, key, err.schema.get("description") or err.message, err.instance)


def parse_scan_config(data: Any, file: str = "config.yaml") -> ScanConfig:
    """Build :class:`ScanConfig` from a config mapping (its ``scan``, ``fit``, ``backend``, ``output``)."""
    if not isinstance(data, dict) or "scan" not in data:
        raise ConfigError(file, "scan", "a 'scan:' section (yields table and analyses)")
    section = data["scan"]
    _schema_errors(section, file)
    analyses = []
    for name, entry in section["analyses"].items():
        check_name(name, file=file, key=f"scan.analyses.{name}", config=True)
        cols = {str(c): (str(v[0]), int(v[1])) for c, v in entry["columns"].items()}
        analyses.append(AnalysisEntry(name, Path(entry["workspace"]), cols, dict(entry.get("options") or {})))
    fit = data.get("fit") or {}
    if not isinstance(fit, dict):
        raise ConfigError(file, "fit", "a mapping", fit)
    fit = {k: v for k, v in fit.items() if k not in ("jobs", "threads", "max_memory_mb")}  # run budgets
    try:
        settings = FitSettings(**fit)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            file, "fit", "FitSettings fields (engine, mu_test, test_stat, calctype)", str(exc)
        ) from None
    backend = data.get("backend") or {}
    if not isinstance(backend, dict):
        raise ConfigError(file, "backend", "a mapping", backend)
    name = section.get("name", "scan")
    check_name(name, file=file, key="scan.name", config=True)
    output = data.get("output", "results")
    if not isinstance(output, str) or not output:
        raise ConfigError(file, "output", "a folder name", output)
    pairs = section.get("pairs")
    return ScanConfig(
        file=file,
        yields=Path(section["yields"]),
        analyses=tuple(analyses),
        out_dir=Path(output) / name,
        fit=settings,
        backend=dict(backend),
        id_column=section.get("id_column"),
        parameters=tuple(section.get("parameters") or ()),
        pairs=None if pairs is None else tuple((str(a), str(b)) for a, b in pairs),
        chunk_rows=int(section.get("chunk_rows", DEFAULT_CHUNK_ROWS)),
        level=float(section.get("level", 0.05)),
        bins=int(section.get("bins", 20)),
        figures=bool(section.get("figures", False)),
        example=dict(section["example"]) if "example" in section else None,
    )


def load_scan_config(path: str | Path) -> ScanConfig:
    """Read a YAML config (size-capped, aliases refused) and parse its ``scan:`` section."""
    from recastfit.fileio import load_yaml_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "<file>", "an existing YAML file")
    data = load_yaml_file(path, limit_name="max_config_bytes", what="config")
    return parse_scan_config(data, str(path))
