"""The SQLite result store: keys, durability across a hard exit, the results.json export."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from recastfit.errors import InputError
from recastfit.results import FitSettings, HypotestResult, PatchTask
from recastfit.store import ResultStore


def _res(name: str, cls: float, status: str = "ok") -> HypotestResult:
    if status == "failed":
        return HypotestResult(name, [1.0, 2.0], "failed", reason="fit did not converge")
    return HypotestResult(
        name, [1.0, 2.0], "ok", cls, [cls / 2, cls, cls * 1.5, cls * 2, cls * 3], mu_hat=0.5
    )


def test_keyed_by_background_patch_and_settings(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    store.put("bkgA", "p1", "s1", _res("a", 0.1))
    store.put("bkgA", "p2", "s1", _res("b", 0.2))
    assert set(store.get_many("bkgA", ["p1", "p2", "p3"], "s1")) == {"p1", "p2"}
    assert store.get_many("bkgB", ["p1"], "s1") == {}  # another background
    assert store.get_many("bkgA", ["p1"], "s2") == {}  # other fit settings
    got = store.get_many("bkgA", ["p2"], "s1")["p2"]
    assert (got.name, got.cls_obs, got.cls_exp[4], got.mu_hat) == ("b", 0.2, pytest.approx(0.6), 0.5)
    store.put("bkgA", "p2", "s1", _res("b", 0.25))  # replace
    assert store.get_many("bkgA", ["p2"], "s1")["p2"].cls_obs == 0.25
    assert store.count() == 2
    mode = sqlite3.connect(tmp_path / "r.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_error_rows_are_kept_but_not_served(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    store.put_many("b", "s", [("p1", _res("x", 0.1)), ("p2", _res("y", 0.0, "failed"))])
    store.put("b", "p3", "s", HypotestResult("z", [0.0], "failed", reason="RuntimeError: boom"), error=True)
    assert set(store.get_many("b", ["p1", "p2", "p3"], "s")) == {"p1", "p2"}  # engine-flagged fit is final
    errs = store.get_many("b", ["p3"], "s", include_errors=True)
    assert errs["p3"].status == "failed" and errs["p3"].reason == "RuntimeError: boom"
    assert [r["error"] for r in store.rows()] == [0, 0, 1]


def test_commit_survives_a_hard_exit(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    code = (
        "import os; from recastfit.store import ResultStore; from recastfit.results import HypotestResult; "
        f"s = ResultStore({str(db)!r}); "
        "s.put('b', 'p', 's', HypotestResult('pt', [1.0], 'ok', 0.3, [0.1] * 5)); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert ResultStore(db).get_many("b", ["p"], "s")["p"].cls_obs == 0.3


def test_export_writes_the_contract_for_exactly_the_tasks(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    settings = FitSettings()
    bkg = {"channels": [], "version": "1.0.0"}
    tasks = [
        PatchTask(f"pt{i}", (100.0 * i, 10.0), [{"op": "add", "path": f"/x{i}", "value": i}])
        for i in range(3)
    ]
    from recastfit.results import digest

    store.put_many(
        digest(bkg), settings.key(), [(t.key(), _res("old-name", 0.1 * (i + 1))) for i, t in enumerate(tasks)]
    )
    store.put("other-bkg", tasks[0].key(), settings.key(), _res("x", 0.9))
    store.put(digest(bkg), "unrelated", settings.key(), _res("u", 0.5))
    out = tmp_path / "results" / "results.json"
    doc = store.export_results(
        out,
        analysis="demo",
        parameters=["m1", "m2"],
        units=["GeV", "GeV"],
        labels=["$m_1$", "$m_2$"],
        settings=settings,
        tasks=[tasks[2], tasks[0]],
        bkg_spec=bkg,
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == doc
    assert set(doc) == {"analysis", "parameters", "units", "labels", "settings", "points"}
    assert doc["settings"] == {
        "mu_test": 1.0,
        "test_stat": "qtilde",
        "calctype": "asymptotics",
        "engine": "pyhf",
    }
    assert [(p["name"], p["values"], p["cls_obs"]) for p in doc["points"]] == [
        ("pt2", [200.0, 10.0], pytest.approx(0.3)),
        ("pt0", [0.0, 10.0], pytest.approx(0.1)),
    ]
    assert set(doc["points"][0]) == set(HypotestResult("a", [], "ok").to_dict())
    missing = PatchTask("never-run", (1.0, 1.0), [{"op": "add", "path": "/y", "value": 0}])
    with pytest.raises(InputError, match=r"r.sqlite: results: 1 point\(s\) have no stored result: never-run"):
        store.export_results(
            out,
            analysis="demo",
            parameters=[],
            units=[],
            labels=[],
            settings=settings,
            tasks=[missing],
            bkg_spec=bkg,
        )


def _filled(path: Path, n: int = 400) -> ResultStore:
    store = ResultStore(path)
    store.put_many("b", "s", [(f"p{i}", _res(f"pt{i}", 0.001 * i)) for i in range(n)])
    return store


def test_truncated_store_is_detected_and_moved_aside(tmp_path: Path, capsys) -> None:
    db = tmp_path / "results.sqlite"
    _filled(db).close()
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    blob = db.read_bytes()
    assert len(blob) > 8192
    db.write_bytes(blob[: len(blob) // 2])  # cut mid-file, as a full disk or a killed copy would
    from recastfit.store import CorruptStoreError, check_store

    assert "malformed" in check_store(db) or "quick_check" in check_store(db)
    with pytest.raises(
        CorruptStoreError, match=r"results.sqlite: corrupt results store \(.*\); move it aside"
    ):
        ResultStore(db, on_corrupt="raise")
    assert db.read_bytes() == blob[: len(blob) // 2]  # "raise" touches nothing
    store = ResultStore(db)  # default: move aside, say so, start fresh
    moved = store.moved_aside
    assert moved is not None and moved.name.startswith("results.sqlite.corrupt-")
    assert moved.read_bytes() == blob[: len(blob) // 2]  # kept byte for byte, never overwritten
    assert store.count() == 0 and check_store(db) is None
    err = capsys.readouterr().err
    assert "corrupt results store" in err and str(moved) in err


def test_garbage_and_bitflipped_stores(tmp_path: Path) -> None:
    from recastfit.store import CorruptStoreError

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"\x00" * 4096 + b"definitely not sqlite")
    with pytest.raises(CorruptStoreError, match="junk.sqlite: corrupt results store .*bad header"):
        ResultStore(junk, on_corrupt="raise")
    db = tmp_path / "flip.sqlite"
    _filled(db, 2000).close()
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    raw = bytearray(db.read_bytes())
    for off in range(4096 + 100, len(raw), 4096):  # scribble over every b-tree page header
        raw[off - 100 : off - 92] = b"\xff" * 8
    db.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match="flip.sqlite: corrupt results store"):
        ResultStore(db, on_corrupt="raise")


def test_merge_from_part_stores(tmp_path: Path) -> None:
    main = ResultStore(tmp_path / "results.sqlite")
    main.put("b", "p1", "s", _res("one", 0.1))
    main.put("b", "p2", "s", _res("two", 0.0, "failed"), error=True)
    part = ResultStore(tmp_path / "part-1.sqlite")
    part.put("b", "p1", "s", _res("one", 0.9, "failed"), error=True)  # must not replace a good row
    part.put("b", "p2", "s", _res("two", 0.2))  # replaces the error row
    part.put("b", "p3", "s", _res("three", 0.3))
    part.close()
    assert main.merge_from(tmp_path / "part-1.sqlite") == 2
    got = main.get_many("b", ["p1", "p2", "p3"], "s", include_errors=True)
    assert {k: (v.status, v.cls_obs) for k, v in got.items()} == {
        "p1": ("ok", 0.1),
        "p2": ("ok", 0.2),
        "p3": ("ok", 0.3),
    }
    assert main.merge_from(tmp_path / "part-1.sqlite") == 0  # idempotent
    fp = main.fingerprint()
    other = ResultStore(tmp_path / "again.sqlite")
    for part_path in (tmp_path / "part-1.sqlite", tmp_path / "results.sqlite"):
        other.merge_from(part_path)
    assert other.fingerprint() == fp  # same science, merged in another order
    bad = tmp_path / "part-2.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x01" * 50)
    from recastfit.store import CorruptStoreError

    with pytest.raises(CorruptStoreError, match="part-2.sqlite"):
        main.merge_from(bad)
    with pytest.raises(InputError, match="part-9.sqlite: no results store"):
        main.merge_from(tmp_path / "part-9.sqlite")
    assert main.count() == 3
