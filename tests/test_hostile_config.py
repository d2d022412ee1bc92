"""Hostile and malformed configs: each ends in a named ConfigError (file and key named) within 10 s
and 500 MB (tests/hostile.py: a forked child, peak RSS above its fork baseline), touching nothing
outside its folder; and config values with shell syntax stay data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from recastfit.config import load_run
from recastfit.errors import ConfigError
from tests.hostile import run_bounded
from tests.workflow_util import copy_workflow, new_workflow, run_snakemake

# the session's demo run (conftest.demo_workflow) is made once per pytest worker: keep its users on one
pytestmark = pytest.mark.xdist_group("demo_workflow")

BASE = {
    "analysis": "demo",
    "pallet": {"source": "demo/pallet"},
    "signal": {"type": "yields", "path": "demo/signal_yields.json"},
    "grid": {"parameters": ["m_parent", "m_LSP"], "units": ["GeV", "GeV"]},
}


def _with(path: str, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def _text(data: dict) -> str:
    return yaml.safe_dump(data)


ALIAS_BOMB = "a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

# (id, config file text, key the error must name)
CASES = [
    ("analysis-dotdot", _text(_with("analysis", "..")), "analysis"),
    ("analysis-traversal", _text(_with("analysis", "../victim")), "analysis"),
    ("analysis-shell", _text(_with("analysis", "x$(touch pwned)")), "analysis"),
    ("analysis-nonascii", _text(_with("analysis", "stau\u00e9")), "analysis"),
    ("analysis-too-long", _text(_with("analysis", "a" * 500)), "analysis"),
    ("yaml-alias-bomb", ALIAS_BOMB, "<file>"),
    ("yaml-deep-nesting", "a: " + "[" * 5000 + "]" * 5000, "<file>"),
    ("oversized-config", "# " + "x" * (2 << 20), "<file>"),
    ("not-utf8", None, "<file>"),
    ("top-level-list", "- a\n- b\n", "<top level>"),
    ("unknown-top-key", _text(_with("colour", "red")), "colour"),
    ("nan-mu", _text(_with("fit.mu_test", float("nan"))), "fit.mu_test"),
    ("inf-timeout", _text(_with("fit.timeout", float("inf"))), "fit.timeout"),
    ("bool-mu", _text(_with("fit.mu_test", True)), "fit.mu_test"),
    ("zero-timeout", _text(_with("fit.timeout", 0)), "fit.timeout"),
    ("zero-jobs", _text(_with("fit.jobs", 0)), "fit.jobs"),
    ("engine-minuit", _text(_with("fit.engine", "minuit")), "fit.engine"),
    ("signal-typo-key", _text(_with("signal.xsex", "x.json")), "signal.xsex"),
    ("theory-unc-too-big", _text(_with("signal.options", {"theory_uncertainty": 1.5})), "signal.options"),
    ("theory-unc-negative", _text(_with("signal.options", {"theory_uncertainty": -0.1})), "signal.options"),
    ("units-length", _text(_with("grid.units", ["GeV"])), "grid.units"),
    ("duplicate-parameters", _text(_with("grid.parameters", ["m", "m"])), "grid.parameters"),
    ("bad-sha256", _text(_with("pallet.sha256", "abc")), "pallet.sha256"),
    ("backend-unknown-key", _text(_with("backend", {"name": "local", "workerz": 3})), "backend"),
    ("contour-unknown-style", _text(_with("contour", {"style": "comic"})), "contour.style"),
    ("missing-signal", yaml.safe_dump({k: v for k, v in BASE.items() if k != "signal"}), "signal"),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_config_is_a_named_error(tmp_path, text, key) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = outside / "marker.txt"
    marker.write_text("keep")
    work = tmp_path / "work"
    work.mkdir()
    path = work / "user.yaml"
    if text is None:
        path.write_bytes(b"analysis: \xff\xfe\n")
    else:
        path.write_text(text)
    outcome = run_bounded(lambda: load_run(path), seconds=10, max_mb=500)
    outcome.expect("ConfigError", str(path), f"'{key}")
    assert outcome.seconds < 10 and outcome.peak_mb < 500
    assert marker.read_text() == "keep" and sorted(p.name for p in outside.iterdir()) == ["marker.txt"]
    assert sorted(p.name for p in work.iterdir()) == ["user.yaml"]
    assert not Path("pwned").exists()


def test_analyses_run_refuses_duplicates_and_missing_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # paths in a config are relative to where snakemake runs
    (tmp_path / "a.yaml").write_text(_text(BASE))
    (tmp_path / "run.yaml").write_text("analyses: [a.yaml, a.yaml]\n")
    with pytest.raises(ConfigError, match=r"run.yaml: key 'analyses'"):
        load_run(tmp_path / "run.yaml")
    (tmp_path / "run2.yaml").write_text("analyses: [a.yaml, nope.yaml]\n")
    with pytest.raises(ConfigError, match=r"run2.yaml: key 'analyses\[1\]'"):
        load_run(tmp_path / "run2.yaml")


def test_list_alias_bomb_is_refused_by_the_workflow(tmp_path) -> None:
    """Snakemake loads --configfile itself; recastfit re-reads it alias-free and stops the run."""
    wf = new_workflow(tmp_path)
    (wf / "bomb.yaml").write_text(ALIAS_BOMB + _text(BASE))
    t0 = time.monotonic()
    proc = run_snakemake(wf, "--configfile", "bomb.yaml", ok=False, timeout=120)
    assert proc.returncode != 0 and time.monotonic() - t0 < 60
    assert "bomb.yaml" in proc.stderr and "YAML aliases are not allowed" in proc.stderr, proc.stderr[-2000:]
    assert not (wf / "results").exists() or not any((wf / "results").rglob("*.json"))


def test_shell_syntax_in_values_stays_data(demo_workflow, tmp_path) -> None:
    """Titles, labels and sources with quotes and $(...) never reach a shell: the run works, no file
    appears, and `$m_0$` (mathtext) is not a shell variable. (A copy of the session's demo run: the
    changed contour section reruns the contour rule, with the title, in a real snakemake run.)"""
    wf = copy_workflow(demo_workflow, tmp_path / "wf")
    before = (wf / "results/demo/contour.png").stat().st_mtime
    fetched = (wf / "results/demo/pallet.json").stat().st_mtime
    cfg = yaml.safe_load((wf / "workflows/config/config.yaml").read_text())
    cfg["contour"] = {"title": "Stau's limit $(touch pwned-title) at $m_0$", "label": "`touch pwned-label`"}
    run_snakemake(wf, config=cfg)
    assert not (wf / "pwned-title").exists() and not (wf / "pwned-label").exists()
    png = wf / "results/demo/contour.png"
    assert png.stat().st_mtime > before and png.stat().st_size > 10_000
    # another config file with the same pallet section: nothing upstream of the contour reruns
    assert (wf / "results/demo/pallet.json").stat().st_mtime == fetched
    bad = dict(cfg, pallet={"source": "ins1755298'$(touch pwned-source)", "offline": True})
    proc = run_snakemake(wf, config=bad, ok=False)
    assert proc.returncode != 0 and not (wf / "pwned-source").exists()
