"""A yields scan survives ``kill -9`` half-way through and resumes: nothing stored is lost, only the
missing rows are refitted, and the results equal those of an uninterrupted run.

Real processes throughout: ``recastfit scan`` runs in a subprocess with the local back end (a worker
process) and the fast engine; the test polls the SQLite store and sends SIGKILL to the driver.
JAX's persistent compilation cache (in the test's folder) spares the later runs the compile.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recastfit.scan.example import EXAMPLE_COLUMNS, write_example

ROOT = Path(__file__).resolve().parents[1]
ROWS = 3072  # 12 batches of 256 points
CLI = "from recastfit.cli import main; raise SystemExit(main())"


def _config(tmp: Path, output: str) -> Path:
    cols = ", ".join(f"{c}: [{ch}, {b}]" for c, (ch, b) in EXAMPLE_COLUMNS["demo_sra"].items())
    cfg = tmp / f"{output}.yaml"
    cfg.write_text(
        f"output: {tmp / output}\n"
        "fit: {engine: fast}\n"
        "backend: {name: local, batch_size: 256, retries: 0}\n"
        "scan:\n"
        f"  yields: {tmp / 'yields.parquet'}\n"
        "  parameters: [m1, m2]\n"
        "  chunk_rows: 512\n"
        "  analyses:\n"
        f"    demo_sra: {{workspace: {tmp / 'BkgOnly.json'}, columns: {{{cols}}}}}\n"
    )
    return cfg


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp / "jax-cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _scan(cfg: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", CLI, "scan", "--config", str(cfg), "--cores", "1"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _rows(db: Path) -> dict[str, tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {
            p: (s, e, r, c)
            for p, s, e, r, c in con.execute("SELECT patch, status, error, result, created FROM results")
        }
    except sqlite3.OperationalError:  # the table is not there yet
        return {}
    finally:
        con.close()


def test_kill_9_half_way_then_resume(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    write_example(tmp_path / "yields.parquet", tmp_path / "BkgOnly.json", rows=ROWS, seed=7)
    env = _env(tmp_path)

    full = _scan(_config(tmp_path, "full"), env)  # the uninterrupted reference (and the compile)
    assert full.returncode == 0, full.stderr[-3000:]
    assert f"{ROWS} rows: {ROWS} fits done, 0 stored, 0 failed, 0 invalid" in full.stdout

    cfg = _config(tmp_path, "killed")
    db = tmp_path / "killed" / "scan" / "results.sqlite"
    cmd = [sys.executable, "-c", CLI, "scan", "--config", str(cfg), "--cores", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:
        stored = len(_rows(db)) if db.exists() else 0
        if stored >= ROWS // 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the scan finished before it could be killed half-way"
    before = _rows(db)
    assert ROWS // 2 <= len(before) < ROWS  # killed mid-scan, with rows already committed
    assert not (tmp_path / "killed" / "scan" / "points.parquet").exists()

    resumed = _scan(cfg, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = ROWS - len(before)
    assert f"{ROWS} rows: {done} fits done, {len(before)} stored, 0 failed, 0 invalid" in resumed.stdout
    after = _rows(db)
    assert len(after) == ROWS and all(s == "ok" and e == 0 for s, e, _, _ in after.values())
    assert {k: after[k] for k in before} == before  # nothing stored was lost or refitted

    ref = pq.read_table(tmp_path / "full" / "scan" / "cls.parquet").to_pylist()
    got = pq.read_table(tmp_path / "killed" / "scan" / "cls.parquet").to_pylist()
    assert [r["name"] for r in got] == [r["name"] for r in ref]
    for a, b in zip(got, ref, strict=True):
        assert a["demo_sra.status"] == b["demo_sra.status"] == "ok"
        for k in ("cls_obs", *(f"cls_exp_{j}" for j in range(5))):
            assert a[f"demo_sra.{k}"] == pytest.approx(b[f"demo_sra.{k}"], rel=1e-9, abs=1e-12)
    s_ref = (tmp_path / "full" / "scan" / "summary.json").read_text()
    assert (tmp_path / "killed" / "scan" / "summary.json").read_text() == s_ref
