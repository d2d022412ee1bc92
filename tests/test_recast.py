"""The demo preserved analysis run through real `yadage-run` (localproc-env); two points in all.

The rest checks the pieces without running yadage: inputs, the argv, output collection, the work
dir life cycle, and that every spec quotes what it interpolates into a shell command.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest
import yadage.workflow_loader
import yaml

from recastfit import demo
from recastfit.cli import main
from recastfit.errors import InputError
from recastfit.signals.recast import (
    MARKER,
    RecastError,
    collect_output,
    prepare_workdir,
    yadage_command,
    yadage_inputs,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO_SPEC = ROOT / "specs" / "demo"


def test_cli_runs_the_demo_spec_for_one_point(tmp_path, capsys) -> None:
    out = tmp_path / "results" / "demo" / "yields" / "demo_500_100.json"
    argv = ["recast", "--spec", str(DEMO_SPEC), "--point", "demo_500_100", "--out", str(out)]
    assert main([*argv, "--values", "m_parent=500", "m_LSP=100", "--timeout", "120"]) == 0
    assert "demo_500_100: 3 channels" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    expected = demo.signal_yields(500.0, 100.0)
    assert saved["name"] == "demo_500_100" and saved["values"] == [500.0, 100.0]
    for ch, cy in expected.items():  # TH1D doubles round-trip exactly
        assert saved["channels"][ch] == {"yields": list(cy.yields), "stat": list(cy.stat)}
    recast = tmp_path / "results" / "demo" / "recast"
    workdir = recast / "demo_500_100"
    assert (workdir / "analysis" / "signal_hists.root").is_file() and (workdir / MARKER).is_file()
    # the point reaches the step as a JSON file; yadage gets its inputs as an init file (no -p)
    point = json.loads((workdir / "_recastfit" / "point.json").read_text())
    assert point == {"name": "demo_500_100", "values": {"m_parent": 500.0, "m_LSP": 100.0}}
    inputs = json.loads((workdir / "_recastfit" / "inputs.json").read_text())
    assert inputs["params"] == str(workdir.resolve() / "_recastfit" / "point.json")
    assert inputs["m_parent"] == "500" and inputs["point"] == "demo_500_100"
    first = (recast / "demo_500_100.log").read_text().splitlines()[0]
    assert first.startswith("$ ") and "yadage-run" in first and " -p " not in first
    assert first.endswith(f"{workdir.resolve()}/_recastfit/inputs.json -t {DEMO_SPEC} --no-visualize")


def test_cli_takes_the_point_from_a_config(tmp_path, monkeypatch, capsys) -> None:
    """`--config`: spec and points from the signal section (points: the demo's points.json)."""
    monkeypatch.chdir(tmp_path)
    demo.write_demo(tmp_path / "demo", grid="small")
    cfg = yaml.safe_load((ROOT / "workflows" / "config" / "config.yaml").read_text())
    cfg["signal"] = {"type": "recast", "spec": str(DEMO_SPEC), "points": "demo/points.json", "timeout": 120}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "results" / "demo" / "yields" / "demo_700_300.json"
    argv = ["recast", "--config", "c.yaml", "--point", "demo_700_300", "--out", str(out)]
    assert main([*argv, "--workdir", "results/demo/recast/demo_700_300"]) == 0
    saved = json.loads(out.read_text())
    assert saved["values"] == [700.0, 300.0]
    assert saved["channels"]["SRA"]["yields"] == list(demo.signal_yields(700.0, 300.0)["SRA"].yields)
    capsys.readouterr()
    # a point the config does not list, without --values: named error, nothing run
    assert main(["recast", "--config", "c.yaml", "--point", "demo_200_0", "--out", "x.json"]) == 2
    assert "c.yaml: key 'signal.points': expected a point named 'demo_200_0'" in capsys.readouterr().err
    assert not Path("x.json").exists()


def test_inputs_templates() -> None:
    got = yadage_inputs("p1", {"m1": 500.0, "m2": 12.5}, {"mass": "{m1}", "tag": "{point}_{m2}"})
    assert got == {"mass": "500", "tag": "p1_12.5"}
    default = yadage_inputs("p1", {"m1": 500.0}, python="/x/python", params="/w/_recastfit/point.json")
    assert default == {
        "m1": "500",
        "point": "p1",
        "python": "/x/python",
        "params": "/w/_recastfit/point.json",
    }
    with pytest.raises(InputError, match=r"inputs.mass: template '\{m3\}' uses an unknown field \{m3\}"):
        yadage_inputs("p1", {"m1": 1.0}, {"mass": "{m3}"})
    # attribute access, indexing and conversions are not plain field references
    for bad in ("{point.__class__}", "{point[0]}", "{point!r}", "{m1:>99999}"):
        with pytest.raises(InputError, match="expected plain {name} references"):
            yadage_inputs("p1", {"m1": 1.0}, {"x": bad})
    with pytest.raises(InputError, match=r"inputs.x: expected no single quote"):
        yadage_inputs("p1", {"m1": 1.0}, {"x": "it's {point}"})


def test_command_is_an_argv_with_an_init_file(tmp_path) -> None:
    cmd = yadage_command(DEMO_SPEC, "workflow.yml", tmp_path / "wd", tmp_path / "in.json", "multiproc:1")
    assert Path(cmd[0]).name == "yadage-run"
    assert cmd[1:] == [
        str(tmp_path / "wd"),
        "workflow.yml",
        str(tmp_path / "in.json"),
        "-t",
        str(DEMO_SPEC),
        "--no-visualize",
        "-b",
        "multiproc:1",
    ]
    with pytest.raises(InputError, match="backend: expected a packtivity backend string"):
        yadage_command(DEMO_SPEC, "workflow.yml", tmp_path, tmp_path / "in.json", "x; rm -rf /")


def test_collect_output_yields_file_and_region_map(tmp_path) -> None:
    (tmp_path / "stage").mkdir()
    p = demo.demo_points([(400.0, 0.0)])[0]
    raw = {
        "name": "whatever",
        "values": [0, 0],
        "channels": {f"r_{k}": v.to_dict() for k, v in p.channels.items()},
    }
    (tmp_path / "stage" / "yields.json").write_text(json.dumps(raw))
    (tmp_path / "_recastfit").mkdir()
    (tmp_path / "_recastfit" / "yields.json").write_text("{}")  # recastfit's own files never count
    got = collect_output(tmp_path, None, "demo_400_0", (400.0, 0.0), regions={"r_SRA": "SRA", "r_CR": "CR"})
    assert got.name == "demo_400_0" and got.channels == {"SRA": p.channels["SRA"], "CR": p.channels["CR"]}
    with pytest.raises(RecastError, match=r"output '\*\*/none.root' matched 0 files .*'stage/yields.json'"):
        collect_output(tmp_path, "**/none.root", "x", (1.0,))


def test_workdir_life_cycle(tmp_path) -> None:
    root = tmp_path / "recast"
    wd = prepare_workdir(root / "p1", root)
    (wd / "old.txt").write_text("stale")
    wd = prepare_workdir(root / "p1", root)  # marked by recastfit: removed and made again
    assert sorted(p.name for p in wd.iterdir()) == [MARKER]
    (root / "empty").mkdir()
    assert prepare_workdir(root / "empty", root).is_dir()  # an empty folder is reused
    (root / "theirs").mkdir()
    (root / "theirs" / "data.txt").write_text("keep")
    with pytest.raises(
        RecastError, match=r"theirs: the recast work dir exists and was not made by recastfit"
    ):
        prepare_workdir(root / "theirs", root)
    assert (root / "theirs" / "data.txt").read_text() == "keep"


_FIELD = re.compile(r"\{[^{}]*\}")


def _unquoted_fields(command: str) -> list[str]:
    """The ``{field}`` references of a command template that are not inside single quotes."""
    bare, quoted = [], False
    for text, field, _, _ in string.Formatter().parse(command):
        quoted ^= text.count("'") % 2 == 1
        if field is not None and not quoted:
            bare.append(field)
    return bare


def test_specs_validate_and_quote_every_interpolation() -> None:
    """Every spec loads under the yadage schema, and every {input} in a command is single-quoted."""
    for name, env in (("demo", "localproc-env"), ("template-docker", "docker-encapsulated")):
        spec = yadage.workflow_loader.workflow("workflow.yml", toplevel=str(ROOT / "specs" / name))
        assert spec["stages"][0]["scheduler"]["step"]["environment"]["environment_type"] == env
        steps = yaml.safe_load((ROOT / "specs" / name / "steps.yml").read_text())
        for step_name, step in steps.items():
            process = step["process"]
            command = process.get("cmd") or process.get("script")
            assert command and _FIELD.search(command), (name, step_name)
            assert _unquoted_fields(command) == [], (name, step_name, command)
    assert _unquoted_fields("run {a} '{b}'") == ["a"]
