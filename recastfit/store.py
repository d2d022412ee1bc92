"""Durable results: one SQLite file (WAL), a row per (background, patch, fit settings).

Rows are committed as soon as a point finishes, so a run killed at any moment loses only
the points still in flight. A row with ``error = 1`` records a point whose task raised
even after retries; such rows are reported but recomputed by the next run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recastfit.errors import InputError
from recastfit.fileio import write_json_atomic
from recastfit.results import FitSettings, HypotestResult, PatchTask, digest

__all__ = ["ResultStore", "StoredPoint"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    bkg TEXT NOT NULL,
    patch TEXT NOT NULL,
    settings TEXT NOT NULL,
    name TEXT NOT NULL,
    point_values TEXT NOT NULL,
    status TEXT NOT NULL,
    error INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL,
    run_id TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (bkg, patch, settings)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SCHEMA_VERSION = "1"

StoredPoint = tuple[str, HypotestResult]  # (patch digest, result)


class ResultStore:
    """SQLite store of hypothesis-test results keyed by (bkg digest, patch digest, settings key).

    >>> import tempfile, pathlib
    >>> s = ResultStore(pathlib.Path(tempfile.mkdtemp()) / "r.sqlite")
    >>> s.put("b", "p", "s", HypotestResult("pt", [1.0], "ok", 0.2, [0.1] * 5))
    >>> s.get_many("b", ["p", "q"], "s")["p"].cls_obs
    0.2
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives process kills
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------
    def put(
        self,
        bkg: str,
        patch: str,
        settings: str,
        result: HypotestResult,
        *,
        error: bool = False,
        run_id: str | None = None,
    ) -> None:
        """Insert or replace one point and commit."""
        self.put_many(bkg, settings, [(patch, result)], error=error, run_id=run_id)

    def put_many(
        self,
        bkg: str,
        settings: str,
        items: Iterable[StoredPoint],
        *,
        error: bool = False,
        run_id: str | None = None,
    ) -> int:
        """Insert or replace several points in one committed transaction; returns the count."""
        now = time.time()
        rows = [
            (
                bkg,
                patch,
                settings,
                res.name,
                json.dumps(list(res.values)),
                res.status,
                int(error),
                json.dumps(res.to_dict()),
                run_id,
                now,
            )
            for patch, res in items
        ]
        if not rows:
            return 0
        with self._db:  # BEGIN ... COMMIT
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    # -- reading -------------------------------------------------------------------------
    def get_many(
        self, bkg: str, patches: Iterable[str], settings: str, *, include_errors: bool = False
    ) -> dict[str, HypotestResult]:
        """Stored results for the given patch digests (errors only if ``include_errors``)."""
        wanted = list(dict.fromkeys(patches))
        out: dict[str, HypotestResult] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT patch, result, error FROM results "
                f"WHERE bkg = ? AND settings = ? AND patch IN ({marks})"
            )
            for patch, blob, err in self._db.execute(query, (bkg, settings, *chunk)):
                if err and not include_errors:
                    continue
                out[patch] = HypotestResult.from_dict(json.loads(blob))
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict (for inspection and tests)."""
        cur = self._db.execute("SELECT * FROM results ORDER BY created, rowid")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def count(self, *, include_errors: bool = True) -> int:
        where = "" if include_errors else " WHERE error = 0"
        return int(self._db.execute(f"SELECT COUNT(*) FROM results{where}").fetchone()[0])

    # -- export --------------------------------------------------------------------------
    def export_results(
        self,
        path: str | Path,
        *,
        analysis: str,
        parameters: Sequence[str],
        units: Sequence[str],
        labels: Sequence[str],
        settings: FitSettings,
        tasks: Sequence[PatchTask],
        bkg_spec: dict | None = None,
        bkg_digest: str | None = None,
    ) -> dict[str, Any]:
        """Write the results.json contract for exactly ``tasks`` (in order) and return it.

        The background is given as ``bkg_spec`` or ``bkg_digest``; with neither, the
        newest row per patch is used. A task with no stored row raises :class:`InputError`.
        """
        bkg = bkg_digest or (digest(bkg_spec) if bkg_spec is not None else None)
        found = self._lookup([t.key() for t in tasks], settings.key(), bkg)
        missing = [t.name for t in tasks if t.key() not in found]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputError(
                str(self.path),
                "results",
                f"{len(missing)} point(s) have no stored result: {shown} (run the fit)",
            )
        points = []
        for task in tasks:
            res = found[task.key()]
            res.name, res.values = task.name, list(task.values)
            points.append(res.to_dict())
        doc = {
            "analysis": analysis,
            "parameters": list(parameters),
            "units": list(units),
            "labels": list(labels),
            "settings": asdict(settings),
            "points": points,
        }
        write_json_atomic(path, doc)
        return doc

    def _lookup(self, patches: list[str], settings: str, bkg: str | None) -> dict[str, HypotestResult]:
        if bkg is not None:
            return self.get_many(bkg, patches, settings, include_errors=True)
        out: dict[str, HypotestResult] = {}
        wanted = set(patches)
        query = "SELECT patch, result FROM results WHERE settings = ? ORDER BY created, rowid"
        for patch, blob in self._db.execute(query, (settings,)):
            if patch in wanted:
                out[patch] = HypotestResult.from_dict(json.loads(blob))
        return out
