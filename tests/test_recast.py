"""The demo preserved analysis run through yadage (localproc-env), one point at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yadage.workflow_loader

from recastfit import demo
from recastfit.cli import main
from recastfit.errors import ConfigError, InputError
from recastfit.signals.recast import RecastError, collect_output, run_point, yadage_inputs
from recastfit.signals.sources import load_signal_points, recast_points, recast_settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_SPEC = ROOT / "specs" / "demo"


def test_run_point_gives_the_demo_analysis_yields(tmp_path) -> None:
    out = tmp_path / "results" / "yields" / "demo_500_100.json"
    point = run_point(DEMO_SPEC, "demo_500_100", {"m_parent": 500.0, "m_LSP": 100.0}, out)
    expected = demo.signal_yields(500.0, 100.0)
    assert point.channels == expected  # TH1D doubles round-trip exactly
    saved = json.loads(out.read_text())
    assert saved["name"] == "demo_500_100" and saved["values"] == [500.0, 100.0]
    assert saved["channels"]["SRA"]["yields"] == list(expected["SRA"].yields)
    workdir = tmp_path / "results" / "recast" / "demo_500_100"
    assert (workdir / "analysis" / "signal_hists.root").is_file()
    assert "yadage-run" in (tmp_path / "results" / "recast" / "demo_500_100.log").read_text()


def test_cli_verb_and_failed_workflow(tmp_path, capsys) -> None:
    out = tmp_path / "y" / "demo_300_0.json"
    rc = main(
        [
            "recast",
            "--spec",
            str(DEMO_SPEC),
            "--point",
            "demo_300_0",
            "--values",
            "m_parent=300",
            "m_LSP=0",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "wd"),
        ]
    )
    assert rc == 0 and "demo_300_0: 3 channels" in capsys.readouterr().out
    assert json.loads(out.read_text())["channels"]["SRB"]["yields"] == list(
        demo.signal_yields(300, 0)["SRB"].yields
    )
    # m_LSP above m_parent: the analysis step exits non-zero -> a named failure with the log path
    with pytest.raises(
        RecastError, match=r"point 'bad': yadage-run failed \(exit \d+\); log: .*bad.log"
    ) as err:
        run_point(DEMO_SPEC, "bad", {"m_parent": 300.0, "m_LSP": 400.0}, tmp_path / "y" / "bad.json")
    assert "demo_step: error: m_LSP=400.0 must be below m_parent=300.0" in str(err.value)
    assert not (tmp_path / "y" / "bad.json").exists()
    rc = main(["recast", "--spec", str(DEMO_SPEC), "--point", "p", "--values", "m_parent", "--out", "x.json"])
    assert rc == 2 and "--values" in capsys.readouterr().err


def test_inputs_templates() -> None:
    got = yadage_inputs("p1", {"m1": 500.0, "m2": 12.5}, {"mass": "{m1}", "tag": "{point}_{m2}"})
    assert got == {"mass": "500", "tag": "p1_12.5"}
    default = yadage_inputs("p1", {"m1": 500.0}, python="/x/python")
    assert default == {"m1": "500", "point": "p1", "python": "/x/python"}
    with pytest.raises(InputError, match=r"inputs.mass: template '\{m3\}' uses an unknown field"):
        yadage_inputs("p1", {"m1": 1.0}, {"mass": "{m3}"})


def test_collect_output_yields_file_and_region_map(tmp_path) -> None:
    (tmp_path / "stage").mkdir()
    p = demo.demo_points([(400.0, 0.0)])[0]
    raw = {
        "name": "whatever",
        "values": [0, 0],
        "channels": {f"r_{k}": v.to_dict() for k, v in p.channels.items()},
    }
    (tmp_path / "stage" / "yields.json").write_text(json.dumps(raw))
    got = collect_output(tmp_path, None, "demo_400_0", (400.0, 0.0), regions={"r_SRA": "SRA", "r_CR": "CR"})
    assert got.name == "demo_400_0" and got.channels == {"SRA": p.channels["SRA"], "CR": p.channels["CR"]}
    with pytest.raises(RecastError, match=r"output '\*\*/none.root' matched 0 files .*'stage/yields.json'"):
        collect_output(tmp_path, "**/none.root", "x", (1.0,))


def test_recast_section_points_and_keys(tmp_path) -> None:
    sec = {"type": "recast", "spec": str(DEMO_SPEC), "points": "demo", "window": {"m_parent": [200, 300]}}
    pts = recast_points(sec, config_file="c.yaml", base_dir=tmp_path, parameters=demo.PARAMETERS)
    assert pts == [
        ("demo_200_0", (200.0, 0.0)),
        ("demo_200_100", (200.0, 100.0)),
        ("demo_300_0", (300.0, 0.0)),
        ("demo_300_100", (300.0, 100.0)),
        ("demo_300_200", (300.0, 200.0)),
    ]
    listed = {**sec, "points": [{"name": "a", "values": [1, 2]}, [3, 4.5]], "window": None}
    assert recast_points(listed, config_file="c.yaml", base_dir=tmp_path) == [
        ("a", (1.0, 2.0)),
        ("3_4p5", (3.0, 4.5)),
    ]
    with pytest.raises(ConfigError, match=r"c.yaml: key 'signal.points': expected this key"):
        recast_points({"type": "recast", "spec": "x"}, config_file="c.yaml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"key 'signal.spec': expected an existing path"):
        recast_settings({**sec, "spec": "nowhere"}, config_file="c.yaml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"key 'signal.xsec': expected no such key for type 'recast'"):
        recast_points({**sec, "xsec": "x.json"}, config_file="c.yaml", base_dir=tmp_path)


def test_load_signal_points_reads_the_yields_folder(tmp_path) -> None:
    """The patches step reads yields/<point>.json; a missing point is run through yadage."""
    grid = [(200.0, 0.0), (200.0, 100.0)]
    ydir = tmp_path / "results" / "demo" / "yields"
    ydir.mkdir(parents=True)
    first = demo.demo_points(grid[:1])[0]
    (ydir / f"{first.name}.json").write_text(json.dumps(first.to_dict()))
    sec = {
        "type": "recast",
        "spec": str(DEMO_SPEC),
        "points": [{"name": demo.point_name(*g), "values": list(g)} for g in grid],
    }
    found = load_signal_points(
        sec,
        config_file="c.yaml",
        base_dir=tmp_path,
        bkg_spec=demo.background_workspace(),
        parameters=demo.PARAMETERS,
        results_dir=tmp_path / "results" / "demo",
    )
    assert [p.channels for p in found.points] == [demo.signal_yields(*g) for g in grid]
    assert (ydir / "demo_200_100.json").is_file() and (
        tmp_path / "results" / "demo" / "recast" / "demo_200_100"
    ).is_dir()


def test_specs_validate_against_the_yadage_schema() -> None:
    for name, env in (("demo", "localproc-env"), ("template-docker", "docker-encapsulated")):
        spec = yadage.workflow_loader.workflow("workflow.yml", toplevel=str(ROOT / "specs" / name))
        assert spec["stages"][0]["scheduler"]["step"]["environment"]["environment_type"] == env
