"""The config is validated before any fit; each bad value names its key and what was expected."""

from __future__ import annotations

import copy

import pytest
import yaml

from recastfit.config import Config, load_config, load_run, parse_config
from recastfit.errors import ConfigError
from tests.conftest import ROOT

DEFAULT = ROOT / "workflows" / "config" / "config.yaml"


def default() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def test_default_config_is_valid() -> None:
    cfg = load_config(DEFAULT)
    assert cfg.analysis == "demo"
    assert cfg.parameters == ["m_parent", "m_LSP"] and cfg.units == ["GeV", "GeV"]
    assert cfg.fit.engine == "pyhf" and cfg.fit.mu_test == 1.0
    assert str(cfg.results_dir) == "results/demo"


@pytest.mark.parametrize(
    ("edit", "key", "expected"),
    [
        (lambda c: c.pop("pallet"), "pallet", "present"),
        (lambda c: c["pallet"].pop("source"), "pallet.source", "present"),
        (lambda c: c["signal"].update(type="magic"), "signal.type", "one of patchset"),
        (lambda c: c["fit"].update(engine="minuit"), "fit.engine", "one of pyhf, fast"),
        (lambda c: c["fit"].update(mu_test="one"), "fit.mu_test", "number"),
        (lambda c: c["grid"].update(parameters="m1"), "grid.parameters", "array"),
        (lambda c: c["grid"].update(units=["GeV"]), "grid.units", "one entry per parameter"),
        (lambda c: c.update(analysis="my analysis"), "analysis", "letters, digits"),
        (lambda c: c.update(colour="blue"), "colour", "no such key"),
        (lambda c: c["backend"].update(name="slurm"), "backend.name", "one of local"),
        (lambda c: c["signal"]["options"].update(stat="poisson"), "signal.options.stat", "one of"),
        (lambda c: c["backend"].update(batch_size=0), "backend.batch_size", "an integer >= 1"),
        (lambda c: c["backend"].update(workerz=2), "backend.workerz", ""),
    ],
)
def test_bad_config_names_key(edit, key: str, expected: str) -> None:
    data = copy.deepcopy(default())
    edit(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "my.yaml")
    msg = str(info.value)
    assert info.value.key == key, msg
    assert msg.startswith("my.yaml: key ") and expected in msg, msg


def test_missing_and_broken_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="an existing YAML file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("analysis: [unclosed\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("path", sorted((ROOT / "workflows" / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path) -> None:
    cfg = load_run(path)
    if isinstance(cfg, Config):
        assert cfg.parameters and len(cfg.units) == len(cfg.parameters)
    else:  # the scan example: a scan-only config
        assert cfg.analyses and cfg.yields.suffix == ".parquet"
