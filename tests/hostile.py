"""Harness for hostile-input tests: run a callable in a bounded child process, plant marker files.

Each hostile row is "this input must end in a named error within S seconds and M MB, and nothing
outside the results folder is created, changed or removed". Use it as::

    from tests.hostile import check_markers, planted_markers, run_bounded

    def test_row(tmp_path):
        markers = planted_markers(tmp_path)
        out = run_bounded(lambda: load_config(tmp_path / "results" / "bad.yaml"))
        out.expect("ConfigError", "key 'analysis'")   # type name + a piece of the message
        check_markers(markers)

:func:`run_bounded` forks (so ``fn`` may be a closure or lambda; nothing is pickled on the way in),
redirects the child's stdout/stderr (file descriptors 1 and 2) to a file whose text is returned,
polls the child's peak resident memory (``VmHWM`` in ``/proc``, which the kernel keeps as a running
maximum, so short spikes are seen) and kills it when it passes ``max_mb`` or runs past ``seconds``.
Memory is counted above what the child inherited at fork (a test process that already loaded pyhf
or JAX starts its children at a few hundred MB): ``peak_mb`` is the growth caused by ``fn``,
``rss_mb`` the absolute peak.
The outcome carries the exception's type name and message as strings: what the child raised is
never unpickled by the parent.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "Markers", "run_bounded", "planted_markers", "check_markers", "TIMEOUT", "MEMORY"]

TIMEOUT = "Timeout"  # error name when the child ran past ``seconds``
MEMORY = "MemoryExceeded"  # error name when the child's peak RSS passed ``max_mb``
CRASHED = "Crashed"  # error name when the child died without reporting (signal, os._exit)


@dataclass
class Outcome:
    """What one bounded call did.

    ``error`` is the exception's type name (``None`` when ``fn`` returned), or one of
    :data:`TIMEOUT`, :data:`MEMORY`, ``"Crashed"``; ``message`` its ``str()``; ``recastfit`` is true
    when the exception is a :class:`recastfit.errors.RecastfitError`; ``result`` is ``repr()`` of the
    return value; ``output`` the child's captured stdout+stderr; ``traceback`` the formatted traceback.
    """

    error: str | None
    message: str
    seconds: float
    peak_mb: float
    recastfit: bool = False
    rss_mb: float = 0.0
    result: str | None = None
    output: str = ""
    traceback: str = ""
    exit_code: int | None = None

    @property
    def bounded(self) -> bool:
        """True when the call ended by itself (no timeout, memory kill or crash)."""
        return self.error not in (TIMEOUT, MEMORY, CRASHED)

    def expect(self, error: str | Iterable[str], *fragments: str) -> Outcome:
        """Assert the call raised ``error`` (a type name, or any of several), each fragment in its message.

        Returns ``self`` so rows can chain further checks.
        """
        names = {error} if isinstance(error, str) else set(error)
        assert self.error in names, (
            f"expected {sorted(names)}, got {self.error}: {self.message}\n"
            f"--- output ---\n{self.output[-3000:]}\n--- traceback ---\n{self.traceback[-3000:]}"
        )
        for frag in fragments:
            assert frag in self.message, f"{frag!r} not in message: {self.message!r}"
        return self


def _peak_kb(pid: int | str, field: str = "VmHWM") -> int:
    """Peak resident set (VmHWM) of ``pid`` in kB (or another ``field``), or 0 when it has gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _child(fn: Callable[[], Any], conn: Any, out_path: str) -> None:
    """Run ``fn`` with fds 1/2 sent to ``out_path``; send a plain tuple of strings back."""
    conn.send(("baseline", _peak_kb("self", "VmRSS")))
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # pytest replaces sys.stdout/err with capture objects: point them at the redirected fds too
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    report: tuple[Any, ...]
    try:
        value = fn()
        report = ("ok", None, "", False, repr(value)[:10_000], "", None)
    except BaseException as exc:  # noqa: BLE001 - report everything, including SystemExit
        try:
            from recastfit.errors import RecastfitError

            is_rf = isinstance(exc, RecastfitError)
        except Exception:  # noqa: BLE001
            is_rf = False
        code = exc.code if isinstance(exc, SystemExit) else None
        report = (
            "error",
            type(exc).__name__,
            str(exc)[:20_000],
            is_rf,
            None,
            traceback.format_exc()[-20_000:],
            code if isinstance(code, int) or code is None else str(code),
        )
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        conn.send((*report, _peak_kb("self")))  # the child's own peak: it may end before a poll
        conn.close()
        os._exit(0)


def run_bounded(fn: Callable[[], Any], *, seconds: float = 10, max_mb: float = 500) -> Outcome:
    """Run ``fn()`` in a forked child bounded by ``seconds`` of wall time and ``max_mb`` of peak RSS.

    The child is killed (SIGKILL, with its process group) when it passes either bound; the outcome then
    names :data:`TIMEOUT` or :data:`MEMORY`. ``peak_mb`` is the child's peak resident memory above
    what it inherited at fork.
    """
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    fd, out_path = tempfile.mkstemp(prefix="hostile-", suffix=".out")
    os.close(fd)
    start = time.monotonic()
    with warnings.catch_warnings():
        # the parent may run server threads; forking them is fine for a child that never joins them
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = ctx.Process(target=_child, args=(fn, send, out_path), daemon=True)
        proc.start()
    send.close()
    pid = proc.pid
    assert pid is not None
    peak_kb = 0
    base_kb: int | None = None
    killed: str | None = None
    report: tuple[Any, ...] | None = None

    def receive() -> bool:
        """Take one message; True when it was the final report (or the pipe closed)."""
        nonlocal base_kb, report
        try:
            msg = recv.recv()
        except EOFError:
            return True
        if msg[0] == "baseline":
            base_kb = msg[1]
            return False
        report = msg
        return True

    try:
        while True:
            peak_kb = max(peak_kb, _peak_kb(pid))
            if recv.poll(0.02):
                if receive():
                    break
                continue
            if not proc.is_alive():
                while recv.poll(0):
                    if receive():
                        break
                break
            if base_kb is not None and peak_kb - base_kb > max_mb * 1024:
                killed = MEMORY
            elif time.monotonic() - start > seconds:
                killed = TIMEOUT
            if killed:
                os.kill(pid, signal.SIGKILL)
                break
        proc.join(5)
        if proc.is_alive():  # pragma: no cover - only after a kill that did not take
            os.kill(pid, signal.SIGKILL)
            proc.join(5)
    finally:
        recv.close()
    elapsed = time.monotonic() - start
    try:
        output = Path(out_path).read_text(errors="replace")
    finally:
        Path(out_path).unlink(missing_ok=True)
    rss_mb = peak_kb / 1024
    peak_mb = max(0, peak_kb - (base_kb or 0)) / 1024
    if killed:
        what = f"after {elapsed:.1f} s" if killed == TIMEOUT else f"at {peak_mb:.0f} MB"
        return Outcome(killed, f"killed {what}", elapsed, peak_mb, rss_mb=rss_mb, output=output)
    if report is None:
        return Outcome(
            CRASHED, f"child exited with {proc.exitcode}", elapsed, peak_mb, rss_mb=rss_mb, output=output
        )
    kind, name, message, is_rf, result, tb, code, own_peak_kb = report
    rss_mb = max(peak_kb, own_peak_kb) / 1024
    peak_mb = max(0, max(peak_kb, own_peak_kb) - (base_kb or 0)) / 1024
    if peak_mb > max_mb:  # it finished between two polls, but went past the bound on the way
        return Outcome(MEMORY, f"peaked at {peak_mb:.0f} MB", elapsed, peak_mb, rss_mb=rss_mb, output=output)
    return Outcome(
        None if kind == "ok" else name,
        message,
        elapsed,
        peak_mb,
        recastfit=is_rf,
        rss_mb=rss_mb,
        result=result,
        output=output,
        traceback=tb,
        exit_code=code,
    )


# ---------------------------------------------------------------------------------------------------
# marker files


SECRET_WORKSPACE = (
    '{"channels": [{"name": "SECRET", "samples": [{"name": "s", "data": [1.0], "modifiers": '
    '[{"name": "mu", "type": "normfactor", "data": null}]}]}], "observations": [{"name": "SECRET", '
    '"data": [1.0]}], "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}], '
    '"version": "1.0.0"}'
)


@dataclass
class Markers:
    """Files planted outside the results folder, and a snapshot of the folders that hold them.

    ``root`` is the folder holding them (``tmp_path / "outside"`` by default): ``secret/BkgOnly.json``
    (a valid workspace that an archive escaping its folder would find), ``marker.txt`` and
    ``victim/keep.txt``. ``snapshot`` maps every file under the watched folders to its SHA-256.
    """

    root: Path
    watched: tuple[Path, ...]
    snapshot: dict[str, str] = field(default_factory=dict)

    @property
    def secret(self) -> Path:
        """The planted workspace a link-escaping archive would point at."""
        return self.root / "secret" / "BkgOnly.json"


def _digest_tree(folders: Iterable[Path]) -> dict[str, str]:
    """Map each entry under ``folders`` (not following links) to a digest of its content or link target."""
    out: dict[str, str] = {}
    for folder in folders:
        if not folder.exists():
            out[str(folder)] = "<missing>"
            continue
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[str(p)] = "link:" + os.readlink(p)
                elif p.is_dir():
                    out[str(p)] = "<dir>"
                else:
                    try:
                        out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                    except OSError as exc:
                        out[str(p)] = f"<unreadable {exc.errno}>"
    return out


def planted_markers(tmp_path: Path, *, name: str = "outside", watch: Iterable[Path] = ()) -> Markers:
    """Plant marker files under ``tmp_path / name`` and snapshot it plus any ``watch`` folders.

    Keep the test's results folder elsewhere (e.g. ``tmp_path / "results"``).
    """
    root = Path(tmp_path) / name
    (root / "secret").mkdir(parents=True, exist_ok=True)
    (root / "victim").mkdir(exist_ok=True)
    (root / "secret" / "BkgOnly.json").write_text(SECRET_WORKSPACE)
    (root / "marker.txt").write_text("do not touch\n")
    (root / "victim" / "keep.txt").write_text("keep me\n")
    watched = (root, *(Path(w) for w in watch))
    return Markers(root, watched, _digest_tree(watched))


def check_markers(markers: Markers) -> None:
    """Assert nothing under the watched folders was created, changed or removed since planting."""
    now = _digest_tree(markers.watched)
    before = markers.snapshot
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    changed = sorted(k for k in set(now) & set(before) if now[k] != before[k])
    assert not (added or removed or changed), (
        f"files outside the results folder touched: added={added} removed={removed} changed={changed}"
    )
