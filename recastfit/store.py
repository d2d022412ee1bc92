"""Durable results: one SQLite file (WAL), a row per (background, patch, fit settings).

Rows are committed as soon as a point finishes, so a run killed at any moment loses only
the points still in flight. A row with ``error = 1`` records a point whose task raised
even after retries; such rows are reported but recomputed by the next run.

A store is never trusted blindly: when it is opened, a file that is not an SQLite database,
is truncated, or fails ``PRAGMA quick_check`` is a :class:`CorruptStoreError`. By default
(``on_corrupt="move"``) the bad file (with its ``-wal``/``-shm`` companions) is moved aside to
``<name>.corrupt-<UTC time>``, a warning naming both paths is printed, and a fresh store is
started (the points are recomputed; the bad file is kept for inspection, never overwritten).
``on_corrupt="raise"`` stops with the error instead. Part stores written by separate jobs
are combined with :meth:`ResultStore.merge_from`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recastfit.errors import InputError, RecastfitError
from recastfit.fileio import write_json_atomic
from recastfit.results import FitSettings, HypotestResult, PatchTask, digest

__all__ = ["CorruptStoreError", "ResultStore", "StoredPoint", "check_store"]

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
_MAGIC = b"SQLite format 3\x00"
_COLUMNS = "bkg, patch, settings, name, point_values, status, error, result, run_id, created"


class CorruptStoreError(RecastfitError):
    """A results store that is not a readable SQLite database (truncated, overwritten, damaged)."""

    def __init__(self, path: str | Path, problem: str, moved_to: Path | None = None) -> None:
        self.path, self.problem, self.moved_to = str(path), problem, moved_to
        msg = f"{path}: corrupt results store ({problem})"
        if moved_to is None:
            msg += "; move it aside (or delete it) and run again to recompute its points"
        else:
            msg += f"; moved aside to {moved_to}"
        super().__init__(msg)


def check_store(path: str | Path) -> str | None:
    """Why the SQLite file at ``path`` cannot be trusted, or None when it passes ``PRAGMA quick_check``.

    A missing or empty file is fine (a new store). Opened read-only: checking changes nothing.

    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "r.sqlite"
    >>> _ = bad.write_bytes(b"not a database at all, just some bytes here")
    >>> check_store(bad)
    'not an SQLite database (bad header)'
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with open(path, "rb") as fh:
        if fh.read(len(_MAGIC)) != _MAGIC:
            return "not an SQLite database (bad header)"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60.0)
        try:
            rows = [r[0] for r in db.execute("PRAGMA quick_check")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"sqlite: {exc}"
    if rows != ["ok"]:
        return "quick_check: " + "; ".join(str(r) for r in rows[:3])
    return None


def _move_aside(path: Path) -> Path:
    """Rename ``path`` (and its -wal/-shm files) to ``<path>.corrupt-<UTC time>``; return the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        if side.exists():
            os.replace(side, target.with_name(target.name + extra))
    return target


class ResultStore:
    """SQLite store of hypothesis-test results keyed by (bkg digest, patch digest, settings key).

    >>> import tempfile, pathlib
    >>> s = ResultStore(pathlib.Path(tempfile.mkdtemp()) / "r.sqlite")
    >>> s.put("b", "p", "s", HypotestResult("pt", [1.0], "ok", 0.2, [0.1] * 5))
    >>> s.get_many("b", ["p", "q"], "s")["p"].cls_obs
    0.2
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0, on_corrupt: str = "move") -> None:
        if on_corrupt not in ("move", "raise"):
            raise ValueError(f"on_corrupt must be 'move' or 'raise', got {on_corrupt!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.moved_aside: Path | None = None  # where a corrupt file found at open went
        problem = check_store(self.path)
        if problem is None:
            try:
                self._open(timeout)
                return
            except sqlite3.DatabaseError as exc:  # e.g. a bad schema page quick_check did not reach
                problem = f"sqlite: {exc}"
        if on_corrupt == "raise":
            raise CorruptStoreError(self.path, problem)
        self.moved_aside = _move_aside(self.path)
        print(
            f"recastfit: warning: {CorruptStoreError(self.path, problem, self.moved_aside)}", file=sys.stderr
        )
        self._open(timeout)

    def _open(self, timeout: float) -> None:
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives process kills
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            version = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except BaseException:
            self._db.close()
            raise
        if version != SCHEMA_VERSION:
            self._db.close()
            raise InputError(
                str(self.path), "meta.schema_version", f"expected {SCHEMA_VERSION}, got {version!r}"
            )

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

    def fingerprint(self) -> str:
        """sha256 over the stored science (keys, status, error flag, CLs, mu_hat), not timings or run ids.

        Two stores with the same fingerprint hold the same points with the same results, however
        and in whatever order they were computed (e.g. a killed-and-resumed run vs an uninterrupted one).
        """
        h = hashlib.sha256()
        query = f"SELECT {_COLUMNS} FROM results ORDER BY bkg, patch, settings"
        for bkg, patch, settings, _n, _v, status, error, blob, _r, _c in self._db.execute(query):
            res = json.loads(blob)
            science = [bkg, patch, settings, status, error, res.get("cls_obs"), res.get("cls_exp")]
            h.update(json.dumps(science, separators=(",", ":")).encode() + b"\n")
        return h.hexdigest()

    # -- merging -------------------------------------------------------------------------
    def merge_from(self, other_path: str | Path) -> int:
        """Copy the rows of the store at ``other_path`` into this one; return how many were taken.

        For a key held by both, a good row beats an error row, then the newer row wins; a good
        row here is never replaced by an error row there. The other store is checked first
        (``quick_check``): a corrupt part raises :class:`CorruptStoreError` and nothing is merged.
        The whole merge is one transaction.
        """
        other = Path(other_path)
        if not other.is_file():
            raise InputError(str(other), None, "no results store to merge")
        if other.resolve() == self.path.resolve():
            return 0
        problem = check_store(other)
        if problem is not None:
            raise CorruptStoreError(other, problem)
        try:
            src = sqlite3.connect(f"file:{other}?mode=ro", uri=True, timeout=60.0)
            try:
                tables = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "results" not in tables:
                    raise InputError(
                        str(other), "results", "not a recastfit results store (no results table)"
                    )
                version = src.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if version is None or version[0] != SCHEMA_VERSION:
                    raise InputError(
                        str(other), "meta.schema_version", f"expected {SCHEMA_VERSION}, got {version}"
                    )
                rows = src.execute(f"SELECT {_COLUMNS} FROM results").fetchall()
            finally:
                src.close()
        except sqlite3.DatabaseError as exc:
            raise CorruptStoreError(other, f"sqlite: {exc}") from None
        before = self._db.total_changes
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                f"INSERT INTO results ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (bkg, patch, settings) DO UPDATE SET "
                "name = excluded.name, point_values = excluded.point_values, status = excluded.status, "
                "error = excluded.error, result = excluded.result, run_id = excluded.run_id, "
                "created = excluded.created "
                "WHERE excluded.error < results.error "
                "OR (excluded.error = results.error AND excluded.created > results.created)",
                rows,
            )
        return self._db.total_changes - before

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
            "settings": {k: v for k, v in asdict(settings).items() if k != "timeout"},
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
