"""Hostile and malformed scan inputs: each ends in a named error or in ``invalid`` rows with the reason.

Each row of the table runs the real ``recastfit scan --config`` in a subprocess and must finish
within 10 s of CPU (CPU, not wall time: the shared test machine may be loaded) and 500 MB (peak
RSS of the process), never touch the marker files planted outside the
case's folder, and name the file and key (or the row and column) at fault. No fit is needed for
these cases, so no worker process starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = (
    "import json, resource, sys\n"
    "from recastfit.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime\n"
    "hwm = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    "print(json.dumps({'rc': rc, 'rss': hwm, 'cpu': cpu}))\n"  # VmHWM: ru_maxrss keeps the parent's peak
)
COLS = "{y1: [SRA, 0], y2: [SRB, 0]}"


def _bkg() -> dict:
    from recastfit.demo import background_workspace

    return background_workspace()


@dataclass
class Case:
    """One hostile input: how to plant it, and what the outcome must say."""

    id: str
    plant: Callable[[Path], None]  # writes yields table / config / store into the case folder
    rc: int  # 2: a named error; 1: rows recorded as invalid
    expect: tuple[str, ...]  # substrings of stderr (rc 2) or of the invalid rows' reasons (rc 1)


def _table(d: Path, rows: dict, name: str = "yields.parquet") -> None:
    t = pa.table(rows)
    (pq.write_table if name.endswith(".parquet") else pcsv.write_csv)(t, d / name)


def _config(d: Path, *, analyses: str | None = None, yields: str = "yields.parquet", extra: str = "") -> None:
    analyses = analyses or f"    staus: {{workspace: {d / 'BkgOnly.json'}, columns: {COLS}}}\n"
    (d / "scan.yaml").write_text(
        f"output: {d / 'out'}\nscan:\n  yields: {d / yields}\n{extra}  analyses:\n{analyses}"
    )


def _good(d: Path, **over) -> None:
    rows = {"name": ["a1", "a2"], "y1": [1.0, 2.0], "y2": [0.5, 0.7]}
    rows.update(over)
    _table(d, rows)
    _config(d)


def _nan_yields(d: Path) -> None:
    _good(d, y1=[float("nan"), float("inf")], y2=[-1.0, 0.5])


def _null_yield(d: Path) -> None:
    _good(d, y1=pa.array([None, None], type=pa.float64()))


def _bool_yields(d: Path) -> None:
    (d / "yields.csv").write_text("name,y1,y2\na1,true,1.0\na2,false,2.0\n")
    _config(d, yields="yields.csv")


def _text_yields(d: Path) -> None:
    (d / "yields.csv").write_text("name,y1,y2\na1,1.0,1.0\na2,lots,2.0\n")
    _config(d, yields="yields.csv")


def _unknown_column(d: Path) -> None:
    _good(d)
    _config(d, analyses=f"    staus: {{workspace: {d / 'BkgOnly.json'}, columns: {{y_nope: [SRA, 0]}}}}\n")


def _unknown_channel(d: Path) -> None:
    _good(d)
    _config(d, analyses=f"    staus: {{workspace: {d / 'BkgOnly.json'}, columns: {{y1: [SR9, 0]}}}}\n")


def _bin_out_of_range(d: Path) -> None:
    _good(d)
    _config(d, analyses=f"    staus: {{workspace: {d / 'BkgOnly.json'}, columns: {{y1: [SRA, 7]}}}}\n")


def _bad_analysis_name(d: Path) -> None:
    _good(d)
    _config(d, analyses=f"    '../../evil': {{workspace: {d / 'BkgOnly.json'}, columns: {COLS}}}\n")


def _bad_scan_name(d: Path) -> None:
    _good(d)
    _config(d, extra="  name: ../../outside\n")


def _bad_point_names(d: Path) -> None:
    _good(d, name=["../../victim", "x$(touch pwned)"])


def _duplicate_names(d: Path) -> None:
    _good(d, name=["a1", "a1"])


def _float_ids(d: Path) -> None:
    _good(d, name=[1.5, 2.5])


def _truncated_parquet(d: Path) -> None:
    _good(d)
    blob = (d / "yields.parquet").read_bytes()
    (d / "yields.parquet").write_bytes(blob[: len(blob) // 2])


def _truncated_csv(d: Path) -> None:
    (d / "yields.csv").write_text("name,y1,y2\na1,1.0,1.0\na2,2.0")
    _config(d, yields="yields.csv")


def _typo_key(d: Path) -> None:
    _good(d)
    text = (d / "scan.yaml").read_text().replace("  yields:", "  yeilds:")
    (d / "scan.yaml").write_text(text)


def _alias_bomb(d: Path) -> None:
    _good(d)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    (d / "scan.yaml").write_text((d / "scan.yaml").read_text() + "\n".join(lines) + "\n")


def _bad_workspace(d: Path) -> None:
    _good(d)
    (d / "BkgOnly.json").write_text('{"channels": [{"name": "SRA", "samples": NaN}]}')


def _corrupt_store(d: Path) -> None:
    _good(d, y1=[float("nan"), float("nan")])  # no fit needed: the store is only opened and checked
    store = d / "out" / "scan" / "results.sqlite"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))


CASES = [
    Case(
        "nan-inf-negative-yields",
        _nan_yields,
        1,
        ("yield y1 is not finite (nan)", "yield y1 is not finite (inf)"),
    ),
    Case("empty-yield", _null_yield, 1, ("yield y1 is empty",)),
    Case("bool-yields", _bool_yields, 2, ("yields.csv: y1: expected numbers", "type bool")),
    Case("text-yields", _text_yields, 2, ("yields.csv: y1: expected numbers", "type string")),
    Case("unknown-column", _unknown_column, 2, ("yields.parquet: y_nope: column missing",)),
    Case("unknown-channel", _unknown_channel, 2, ("scan.yaml: key 'scan.analyses.staus.columns.y1'", "SR9")),
    Case("bin-out-of-range", _bin_out_of_range, 2, ("scan.yaml: key 'scan.analyses.staus.columns.y1'",)),
    Case("bad-analysis-name", _bad_analysis_name, 2, ("scan.yaml: key 'scan.analyses", "../../evil")),
    Case("bad-scan-name", _bad_scan_name, 2, ("scan.yaml: key 'scan.name'",)),
    Case(
        "bad-point-names",
        _bad_point_names,
        1,
        ("bad point name '../../victim'", "bad point name 'x$(touch pwned)'"),
    ),
    Case("duplicate-names", _duplicate_names, 2, ("yields.parquet: name: point name 'a1' appears twice",)),
    Case("float-ids", _float_ids, 2, ("yields.parquet: name: expected point names",)),
    Case("truncated-parquet", _truncated_parquet, 2, ("yields.parquet: unreadable parquet table",)),
    Case("truncated-csv", _truncated_csv, 2, ("yields.csv: unreadable", "Expected 3 columns, got 2")),
    Case(
        "typo-key", _typo_key, 2, ("scan.yaml: key 'scan.yeilds': expected no such key (allowed: analyses,",)
    ),
    Case("alias-bomb", _alias_bomb, 2, ("scan.yaml: not valid YAML: YAML aliases are not allowed",)),
    Case("nan-in-workspace", _bad_workspace, 2, ("BkgOnly.json: not valid JSON: NaN",)),
    Case("corrupt-store", _corrupt_store, 1, ("yield y1 is not finite",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_scan_input(case: Case, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    markers = {outside / "victim": b"keep me", tmp_path / "pwned.marker": b"keep me too"}
    for path, blob in markers.items():
        path.write_bytes(blob)
    d = tmp_path / "case"
    d.mkdir()
    (d / "BkgOnly.json").write_text(json.dumps(_bkg()))
    case.plant(d)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", RUN, "scan", "--config", str(d / "scan.yaml")],
        capture_output=True,
        text=True,
        cwd=d,
        env=env,
        timeout=60,
    )
    wall = time.monotonic() - t0
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["rc"] == case.rc, run.stderr[-2000:]
    assert out["cpu"] < 10, f"{case.id} took {out['cpu']:.1f} s of CPU ({wall:.1f} s wall)"
    assert out["rss"] * (1 if sys.platform != "darwin" else 1 / 1024) < 500 * 1024, out  # KiB on Linux
    if case.rc == 2:
        for text in case.expect:
            assert text in run.stderr, run.stderr
    else:
        cls = pq.read_table(d / "out" / "scan" / "cls.parquet").to_pylist()
        reasons = " | ".join(str(r["staus.reason"]) for r in cls)
        assert all(r["staus.status"] == "invalid" for r in cls), cls
        for text in case.expect:
            assert text in reasons, reasons
        summary = json.loads((d / "out" / "scan" / "summary.json").read_text())
        assert summary["n_failed"] == len(cls) and summary["n_excluded"] == 0
    for path, blob in markers.items():
        assert path.read_bytes() == blob
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (d / "pwned").exists() and not (tmp_path / "evil").exists()
    if case.id == "corrupt-store":
        moved = list((d / "out" / "scan").glob("results.sqlite.corrupt-*"))
        assert len(moved) == 1 and "corrupt results store" in run.stderr and str(moved[0]) in run.stderr
