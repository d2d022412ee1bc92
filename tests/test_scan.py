"""Scan mode: best analysis per point, excluded flags, summary, streaming memory, yields -> CLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from scipy.stats import norm

from recastfit.cli import main
from recastfit.scan import results_to_table, scan_table
from recastfit.scan.figures import plot_scan_summary

OFFSETS = (0.9, 0.45, 0.0, -0.45, -0.9)


def synthetic(n: int, seed: int = 0) -> tuple[dict, dict]:
    """A table of three analyses with known CLs (about 2% failed fits each) and the truth."""
    rng = np.random.default_rng(seed)
    m1, m2, tb = rng.uniform(100, 2000, n), rng.uniform(0, 1000, n), rng.uniform(2, 60, n)
    cols = {"name": pa.array([f"pt{i:06d}" for i in range(n)]), "m1": m1, "m2": m2, "tanb": tb}
    obs, exp, valid = [], [], []
    for a, z in (("A", 3 - m1 / 400), ("B", 2.5 - m2 / 250), ("C", 1 + np.sin(tb / 10))):
        o = norm.sf(z + rng.normal(0, 0.3, n))
        ok = rng.uniform(size=n) > 0.02
        cols[f"{a}.cls_obs"] = np.where(ok, o, np.nan)
        for j, d in enumerate(OFFSETS):
            cols[f"{a}.cls_exp_{j}"] = np.where(ok, norm.sf(z + d), np.nan)
        cols[f"{a}.status"] = np.where(ok, "ok", "failed")
        obs.append(o), exp.append(norm.sf(z)), valid.append(ok)
    obs, exp, valid = np.array(obs).T, np.array(exp).T, np.array(valid).T
    best = np.argmin(np.where(valid, exp, np.inf), axis=1)
    failed = ~valid.any(axis=1)
    excluded = ~failed & (obs[np.arange(n), best] < 0.05)
    return cols, {"best": np.where(failed, -1, best), "excluded": excluded, "failed": failed}


def test_scan_best_analysis_and_summary(tmp_path):
    cols, truth = synthetic(3000, seed=1)
    # make some points fail in every analysis: never excluded, listed
    for a in "ABC":
        cols[f"{a}.status"][:5] = "failed"
    truth["failed"][:5], truth["excluded"][:5], truth["best"][:5] = True, False, -1
    pq.write_table(pa.table(cols), tmp_path / "in.parquet")
    s = scan_table(
        tmp_path / "in.parquet", tmp_path / "out.parquet", parameters=["m1", "m2"], bins=10, batch_size=700
    )
    out = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert out["name"] == cols["name"].to_pylist()
    names = np.array(["A", "B", "C", ""])
    assert list(names[truth["best"]]) == out["best_analysis"]
    np.testing.assert_array_equal(out["excluded"], truth["excluded"])
    np.testing.assert_array_equal(out["failed"], truth["failed"])
    assert s.n_points == 3000 and s.n_excluded == int(truth["excluded"].sum())
    assert s.failed_points[:5] == [f"pt{i:06d}" for i in range(5)] and s.n_failed == len(s.failed_points)
    assert 0.2 < s.fraction_excluded < 0.9
    # per-analysis exclusion: observed CLs of that analysis < 0.05 where it did not fail
    a_obs = np.asarray(out["A.cls_obs"], float)
    assert out["A.excluded"] == list(np.nan_to_num(a_obs, nan=1.0) < 0.05)
    assert sum(v["n_best"] for v in s.analyses.values()) == 3000 - s.n_failed
    h = s.projections_1d["m1"]
    assert sum(h["total"]) == 3000 and sum(h["excluded"]) == s.n_excluded
    m1 = np.asarray(cols["m1"])
    first = (m1 >= h["edges"][0]) & (m1 < h["edges"][1])
    assert h["excluded"][0] == int(truth["excluded"][first].sum())
    h2 = s.projections_2d["m1:m2"]
    assert np.sum(h2["total"]) == 3000 and np.sum(h2["excluded"]) == s.n_excluded
    # the same from CSV, streamed, with CSV output
    pcsv.write_csv(pa.table(cols), tmp_path / "in.csv")
    s_csv = scan_table(tmp_path / "in.csv", tmp_path / "out.csv", parameters=["m1"])
    assert s_csv.n_excluded == s.n_excluded and s_csv.failed_points == s.failed_points
    paths = plot_scan_summary(s, tmp_path / "figs")
    assert {p.name for p in paths} == {"scan_1d.png", "scan_1d.pdf", "scan_2d_m1_m2.png", "scan_2d_m1_m2.pdf"}


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    import pyarrow as pa
    from recastfit.scan import scan_table
    from recastfit.scan.figures import plot_scan_summary
    tracemalloc.start()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = scan_table(sys.argv[1], sys.argv[2], parameters=["m1", "m2", "tanb"], batch_size=20000)
    plot_scan_summary(s, sys.argv[3], formats=("png",))
    peak = tracemalloc.get_traced_memory()[1]
    hwm_kb = lambda: int(  # VmHWM: reset at exec, unlike ru_maxrss (the parent's peak)
        next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
    rss = hwm_kb() * 1024
    print(json.dumps({"traced_peak": peak, "maxrss": rss, "n": s.n_points, "excluded": s.n_excluded,
                      "arrow_peak": pa.default_memory_pool().max_memory()}))
""")


def test_scan_1e5_points_memory(tmp_path):
    cols, truth = synthetic(100_000)
    pq.write_table(pa.table(cols), tmp_path / "scan.parquet", row_group_size=20000)
    del cols
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_SCRIPT,
            str(tmp_path / "scan.parquet"),
            str(tmp_path / "out.parquet"),
            str(tmp_path / "figs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    m = json.loads(run.stdout.strip().splitlines()[-1])
    assert m["n"] == 100_000 and m["excluded"] == int(truth["excluded"].sum())
    assert m["maxrss"] < 2 * 1024**3, m  # whole process, interpreter and libraries included
    assert m["traced_peak"] < 100 * 1024**2, m  # Python-side allocations stay per-batch
    assert (tmp_path / "figs" / "scan_2d_m1_m2.png").stat().st_size > 5000
    print("scan 1e5 memory:", m)


def _results(analysis, pts):
    return {
        "analysis": analysis,
        "parameters": ["m1", "m2"],
        "units": ["GeV", "GeV"],
        "points": [
            {
                "name": n,
                "values": v,
                "status": "ok" if o is not None else "failed",
                "cls_obs": o,
                "cls_exp": None if o is None else [e / 4, e / 2, e, 2 * e, 4 * e],
            }
            for n, v, o, e in pts
        ],
    }


def test_cli_scan_from_results_files(tmp_path):
    a = _results(
        "A", [("p1", [100, 0], 0.01, 0.02), ("p2", [200, 0], 0.2, 0.3), ("p3", [300, 0], None, None)]
    )
    b = _results(
        "B",
        [
            ("p1", [100, 0], 0.5, 0.5),
            ("p2", [200, 0], 0.03, 0.1),
            ("p3", [300, 0], None, None),
            ("p4", [400, 0], 0.04, 0.5),
        ],
    )
    for name, d in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
    rc = main(
        [
            "--quiet",
            "scan",
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
            "--out",
            str(tmp_path / "pts.csv"),
            "--params",
            "m1",
            "--figures",
            str(tmp_path / "figs"),
        ]
    )
    assert rc == 0
    rows = {r["name"]: r for r in pcsv.read_csv(tmp_path / "pts.csv").to_pylist()}
    assert rows["p1"]["best_analysis"] == "A" and rows["p1"]["excluded"] is True
    assert rows["p2"]["best_analysis"] == "B" and rows["p2"]["excluded"] is True
    assert rows["p3"]["failed"] is True and rows["p3"]["excluded"] is False
    assert rows["p4"]["best_analysis"] == "B" and rows["p4"]["excluded"] is True  # A lacks p4
    summary = json.loads((tmp_path / "pts.summary.json").read_text())
    assert summary["n_points"] == 4 and summary["n_excluded"] == 3 and summary["failed_points"] == ["p3"]
    assert (tmp_path / "figs" / "scan_1d.png").exists()


def test_results_to_table_marks_missing(tmp_path):
    a = _results("A", [("p1", [1, 0], 0.01, 0.02)])
    b = _results("B", [("p2", [2, 0], 0.5, 0.5)])
    t = pq.read_table(results_to_table([a, b], tmp_path / "cls.parquet")).to_pydict()
    assert (
        t["name"] == ["p1", "p2"]
        and t["A.status"] == ["ok", "missing"]
        and t["B.status"] == ["missing", "ok"]
    )
    assert t["A.cls_exp_4"][0] == pytest.approx(0.08) and np.isnan(t["A.cls_obs"][1])


def test_yields_scan_stau_pyhf(tmp_path, stau_dir, xsec_dir):
    """Yields columns -> patches -> pyhf hypotests through the runner, against the shared pyhf reference."""
    from recastfit.results import FitSettings
    from recastfit.scan import YieldAnalysis, cls_table_from_yields
    from tests.stau import reference, stau_grid

    ref = reference(stau_dir)
    pts = [p for p in stau_grid(stau_dir, xsec_dir) if (p[0], p[1]) in {(280.0, 120.0), (360.0, 200.0)}]
    table = {
        "name": [f"stau_{m1:g}_{m2:g}" for m1, m2, _, _ in pts],
        "m1": [p[0] for p in pts],
        "m2": [p[1] for p in pts],
        "y1": [p[2] for p in pts],
        "y2": [p[3] for p in pts],
    }
    pcsv.write_csv(pa.table(table), tmp_path / "yields.csv")
    bkg = json.loads((stau_dir / "BkgOnly.json").read_text())
    ana = YieldAnalysis("stau", bkg, {"y1": ("SR1cut_cuts", 0), "y2": ("SR2cut_cuts", 0)})
    out = cls_table_from_yields(
        tmp_path / "yields.csv",
        tmp_path / "cls.parquet",
        [ana],
        FitSettings(engine="pyhf"),
        store=tmp_path / "results.sqlite",
        parameters=["m1", "m2"],
        quiet=True,
    )
    assert (out.rows, out.fitted, out.stored, out.failed, out.invalid) == (2, 2, 0, 0, 0)
    t = pq.read_table(tmp_path / "cls.parquet").to_pylist()
    for row in t:
        r = ref[(row["m1"], row["m2"])]
        assert row["stau.status"] == "ok"
        assert row["stau.cls_obs"] == pytest.approx(r["obs"], rel=1e-3, abs=1e-5)
        assert [row[f"stau.cls_exp_{j}"] for j in range(5)] == pytest.approx(r["exp"], rel=1e-3, abs=1e-5)
    s = scan_table(tmp_path / "cls.parquet", tmp_path / "pts.parquet", parameters=["m1", "m2"])
    assert s.n_points == 2 and s.n_excluded == 1  # (280, 120) excluded, (360, 200) not


ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_ROWS = 12


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "scan", "--configfile", "scan.yaml", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def test_snakemake_scan_rule(tmp_path: Path) -> None:
    """The rule `scan` (workflows/rules/scan.smk) run by the real `snakemake`, offline, on the example config.

    A small Snakefile includes only the scan rules (the main Snakefile includes the same file). The
    example rule writes the demo workspace and a yields table; the scan rule fits every row for two
    analyses through the runner (pyhf engine, local back end); the CLs are checked against plain
    pyhf. A yields path holding shell syntax shows that no config value reaches a shell.
    """
    pytest.importorskip("snakemake")
    (tmp_path / "Snakefile").write_text(f'include: "{ROOT / "workflows" / "rules" / "scan.smk"}"\n')
    example = (ROOT / "workflows" / "config" / "scan-example.yaml").read_text()
    example = example.replace("engine: fast", "engine: pyhf").replace("rows: 2000", f"rows: {WORKFLOW_ROWS}")
    example = example.replace(
        "results/scan-example/input/yields.parquet", "input/yields $(touch PWNED).parquet"
    )
    (tmp_path / "scan.yaml").write_text(example)
    run = _snakemake(tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    out = tmp_path / "results" / "scan-example"
    assert (
        not list(tmp_path.rglob("PWNED")) and (tmp_path / "input" / "yields $(touch PWNED).parquet").exists()
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_points"] == WORKFLOW_ROWS and summary["n_failed"] == 0
    assert set(summary["analyses"]) == {"demo_sra", "demo_srb"}
    assert (out / "figures" / "scan_2d_m1_m2.png").stat().st_size > 5000
    cls = pq.read_table(out / "cls.parquet").to_pylist()
    points = pq.read_table(out / "points.parquet").to_pylist()
    assert len(cls) == len(points) == WORKFLOW_ROWS
    import pyhf

    bkg = json.loads((tmp_path / "results" / "scan-example" / "input" / "BkgOnly.json").read_text())
    ws = pyhf.Workspace(bkg)
    from recastfit.scan.example import EXAMPLE_COLUMNS
    from recastfit.scan.tasks import YieldAnalysis, tasks_from_rows

    rows = pq.read_table(tmp_path / "input" / "yields $(touch PWNED).parquet").slice(0, 2).to_pydict()
    for name, columns in EXAMPLE_COLUMNS.items():
        for task, got in zip(
            tasks_from_rows(rows, YieldAnalysis(name, bkg, columns), id_column="name"), cls[:2], strict=True
        ):
            model = ws.model(patches=[task.patch])
            obs, exp = pyhf.infer.hypotest(
                1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
            )
            assert got["name"] == task.name and got[f"{name}.status"] == "ok"
            assert got[f"{name}.cls_obs"] == pytest.approx(float(obs), rel=1e-4, abs=1e-6)
            assert [got[f"{name}.cls_exp_{j}"] for j in range(5)] == pytest.approx(
                [float(e) for e in exp], rel=1e-4, abs=1e-6
            )
    for p in points:  # the best analysis has the lowest median expected CLs
        best = min(
            EXAMPLE_COLUMNS, key=lambda a: next(c for c in cls if c["name"] == p["name"])[f"{a}.cls_exp_2"]
        )
        assert p["best_analysis"] == best and p["excluded"] == (p["best_cls_obs"] < 0.05)
    again = _snakemake(tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_several_analyses_one_pool_across_chunks(tmp_path: Path, monkeypatch) -> None:
    """Two analyses on two different workspaces, three chunks: one worker pool serves every
    run_fits call (the second background rides with the tasks); CLs equal plain pyhf per analysis."""
    import pyhf

    from recastfit.backends.base import BackendConfig
    from recastfit.demo import background_workspace
    from recastfit.results import FitSettings
    from recastfit.scan import run as scan_run
    from recastfit.scan.tasks import YieldAnalysis

    bkg_a = background_workspace()
    bkg_b = json.loads(json.dumps(bkg_a))
    bkg_b["observations"] = [
        {**o, "data": [v + 3 for v in o["data"]]} if o["name"] == "SRB" else o for o in bkg_b["observations"]
    ]
    made = []
    real = scan_run.make_executor
    monkeypatch.setattr(scan_run, "make_executor", lambda *a, **k: made.append(1) or real(*a, **k))
    rows = {
        "name": ["r1", "r2", "r3", "r4", "r5"],
        "y1": [8.0, 0.5, 4.0, 2.0, 8.0],
        "y2": [9.0, 1.0, 6.0, 3.0, 9.0],
    }
    pq.write_table(pa.table(rows), tmp_path / "y.parquet")
    analyses = [
        YieldAnalysis("A", bkg_a, {"y1": ("SRA", 1), "y2": ("SRB", 0)}),
        YieldAnalysis("B", bkg_b, {"y2": ("SRB", 0)}),
    ]
    out = scan_run.cls_table_from_yields(
        tmp_path / "y.parquet",
        tmp_path / "cls.parquet",
        analyses,
        FitSettings(engine="pyhf"),
        store=tmp_path / "results.sqlite",
        backend=BackendConfig(batch_size=2, retries=0),
        chunk_rows=2,
        quiet=True,
    )
    assert made == [1]  # one back end for 3 chunks x 2 analyses
    # time accounting: every answered task reported its worker's wall and CPU seconds
    assert out.tasks >= 4 and 0 < out.engine_wall and 0 < out.fit_time <= out.wall_time
    assert out.accounting().startswith(f"scan time: {out.wall_time:.1f} s wall")
    # r5 repeats r1's yields: the same fits, read back; within a chunk the largest signal is fitted
    # first, and results come back in table order
    assert (out.rows, out.fitted, out.stored, out.failed, out.invalid) == (5, 8, 2, 0, 0)
    got = pq.read_table(tmp_path / "cls.parquet").to_pylist()
    from recastfit.scan.tasks import tasks_from_rows

    for ana in analyses:
        ws = pyhf.Workspace(ana.bkg_spec)
        for task, row in zip(tasks_from_rows(rows, ana, id_column="name"), got, strict=True):
            model = ws.model(patches=[task.patch])
            obs, exp = pyhf.infer.hypotest(
                1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
            )
            assert row[f"{ana.name}.cls_obs"] == pytest.approx(float(obs), rel=1e-4, abs=1e-6)
            assert [row[f"{ana.name}.cls_exp_{j}"] for j in range(5)] == pytest.approx(
                [float(e) for e in exp], rel=1e-4, abs=1e-6
            )
    assert got[0]["B.cls_obs"] != pytest.approx(got[0]["A.cls_obs"], rel=1e-3)


def test_shared_backend_refuses_work_once_closed() -> None:
    """A fit thread still running when the scan stops must end, not restart the worker pool."""
    from recastfit.backends.local import LocalBackend
    from recastfit.scan.run import SharedBackend

    shared = SharedBackend(lambda: LocalBackend(1))
    shared.close()
    calls = (lambda: shared.start(), lambda: shared.submit(print), lambda: shared.submit_batch(print, ()))
    for call in calls:
        with pytest.raises(RuntimeError, match="closed"):
            call()
    assert shared._inner._all == []  # no worker was started
