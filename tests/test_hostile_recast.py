"""Hostile inputs to `recastfit recast`: each row ends in a named error within 10 s and 500 MB, and
nothing outside the test's results folder (marker files planted beside it) nor any stored yields
file is created, changed or removed.

Rows that need a workflow run use real `yadage-run` (two rows: a failing step, a step that hangs).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recastfit import demo
from recastfit.cli import main
from recastfit.signals.recast import collect_output, run_point

try:  # the shared harness (tests/hostile.py), once it is on main
    from tests.hostile import check_markers, planted_markers, run_bounded
except ImportError:  # a small stand-in with the same interface, used until then
    import hashlib
    import multiprocessing as mp
    import signal
    from dataclasses import dataclass

    @dataclass
    class _Outcome:
        error: str | None
        message: str
        recastfit: bool

        def expect(self, error: str, *fragments: str) -> _Outcome:
            assert self.error == error, f"expected {error}, got {self.error}: {self.message}"
            for frag in fragments:
                assert frag in self.message, f"{frag!r} not in message: {self.message!r}"
            return self

    def _child(fn: Callable[[], object], conn) -> None:
        from recastfit.errors import RecastfitError

        try:
            fn()
            conn.send((None, "", False))
        except BaseException as exc:  # noqa: BLE001 - report everything
            conn.send((type(exc).__name__, str(exc), isinstance(exc, RecastfitError)))
        os._exit(0)

    def run_bounded(fn: Callable[[], object], *, seconds: float = 10, max_mb: float = 500) -> _Outcome:
        """Run ``fn`` in a forked child; kill it past ``seconds`` or ``max_mb`` of peak RSS."""
        recv, send = mp.Pipe(duplex=False)
        proc = mp.get_context("fork").Process(target=_child, args=(fn, send), daemon=True)
        start = time.monotonic()
        proc.start()
        while not recv.poll(0.02):
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1])
            except (OSError, StopIteration, ValueError):
                peak = 0
            over = (
                "Timeout" if time.monotonic() - start > seconds else "Memory" if peak > max_mb * 1024 else ""
            )
            if over or not proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                proc.join()
                return _Outcome(over or "Crashed", "killed", False)
        outcome = _Outcome(*recv.recv())
        proc.join()
        return outcome

    @dataclass
    class _Markers:
        watched: tuple[Path, ...]
        snapshot: dict[str, str]

    def _digest(folders: tuple[Path, ...]) -> dict[str, str]:
        out = {}
        for folder in folders:
            for dirpath, dirnames, filenames in os.walk(folder):
                for name in dirnames + filenames:
                    p = Path(dirpath) / name
                    kind = "link:" + os.readlink(p) if p.is_symlink() else "<dir>" if p.is_dir() else None
                    out[str(p)] = kind or hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    def planted_markers(tmp_path: Path, *, watch=()) -> _Markers:
        """Marker files under ``tmp_path/outside``, snapshotted with the ``watch`` folders."""
        root = tmp_path / "outside"
        for rel, text in (
            ("secret/BkgOnly.json", "{}"),
            ("marker.txt", "do not touch"),
            ("victim/keep.txt", "x"),
        ):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        watched = (root, *map(Path, watch))
        return _Markers(watched, _digest(watched))

    def check_markers(markers: _Markers) -> None:
        assert _digest(markers.watched) == markers.snapshot, "files outside the results folder touched"


ROOT = Path(__file__).resolve().parent.parent
DEMO_SPEC = ROOT / "specs" / "demo"

SLEEPY_WORKFLOW = """\
stages:
  - name: sleep
    dependencies: {dependency_type: jsonpath_ready, expressions: [init]}
    scheduler:
      scheduler_type: singlestep-stage
      parameters:
        - {key: params, value: {expression_type: stage-output-selector, step: init, output: params}}
        - {key: out, value: '{workdir}/yields.json'}
      step: {$ref: 'steps.yml#/sleep'}
"""
SLEEPY_STEPS = """\
sleep:
  process:
    process_type: string-interpolated-cmd
    cmd: "echo $$ > step.pid; exec sleep 60 # '{params}' '{out}'"
  publisher: {publisher_type: frompar-pub, outputmap: {out: out}}
  environment: {environment_type: localproc-env}
"""


def _recast(tmp: Path, point: str, *extra: str, values: tuple[str, ...] = ("m_parent=500", "m_LSP=100")):
    """``recastfit recast`` on the demo spec (raising instead of printing, as a library call would)."""
    from recastfit.cli import build_parser

    out = tmp / "results" / "demo" / "yields" / "p.json"
    argv = ["recast", "--spec", str(DEMO_SPEC), f"--point={point}", "--out", str(out), "--values", *values]
    args = build_parser().parse_args([*argv, *extra])
    args.quiet = True
    return lambda: args.func(args)


def _symlinked_workdir(tmp: Path) -> Callable[[], object]:
    recast = tmp / "results" / "demo" / "recast"
    recast.mkdir(parents=True)
    (recast / "demo_500_100").symlink_to(tmp / "outside" / "victim")
    return _recast(tmp, "demo_500_100")


def _symlinked_log(tmp: Path) -> Callable[[], object]:
    recast = tmp / "results" / "demo" / "recast"
    recast.mkdir(parents=True)
    (recast / "demo_500_100.log").symlink_to(tmp / "outside" / "marker.txt")
    return _recast(tmp, "demo_500_100")


def _foreign_workdir(tmp: Path) -> Callable[[], object]:
    mine = tmp / "results" / "mine"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    return _recast(tmp, "demo_500_100", "--workdir", str(mine))


def _failing_step(tmp: Path) -> Callable[[], object]:
    # m_LSP above m_parent: the demo analysis exits 2, yadage-run fails; the log left from an earlier
    # run is a hard link to a file outside (a link that no path check can see): it is replaced, not written
    recast = tmp / "results" / "demo" / "recast"
    recast.mkdir(parents=True)
    os.link(tmp / "outside" / "marker.txt", recast / "bad_point.log")
    return _recast(tmp, "bad_point", "--timeout", "60", values=("m_parent=300", "m_LSP=400"))


def _hanging_step(tmp: Path) -> Callable[[], object]:
    spec = tmp / "results" / "sleepy"
    spec.mkdir(parents=True)
    (spec / "workflow.yml").write_text(SLEEPY_WORKFLOW)
    (spec / "steps.yml").write_text(SLEEPY_STEPS)
    out = tmp / "results" / "demo" / "yields" / "slow.json"
    return lambda: run_point(spec, "slow", {"m1": 1.0}, out, timeout=6)


def _escaping_output(tmp: Path) -> Callable[[], object]:
    wd = tmp / "results" / "demo" / "recast" / "p"
    (wd / "stage").mkdir(parents=True)
    (wd / "stage" / "yields.json").symlink_to(tmp / "outside" / "secret" / "BkgOnly.json")
    return lambda: collect_output(wd, "../../../../outside/secret/*.json", "p", (1.0,))


def _linked_output(tmp: Path) -> Callable[[], object]:
    wd = tmp / "results" / "demo" / "recast" / "p"
    (wd / "stage").mkdir(parents=True)
    (wd / "stage" / "yields.json").symlink_to(tmp / "outside" / "secret" / "BkgOnly.json")
    return lambda: collect_output(wd, None, "p", (1.0,))


def _nan_output(tmp: Path) -> Callable[[], object]:
    wd = tmp / "results" / "demo" / "recast" / "p"
    wd.mkdir(parents=True)
    (wd / "yields.json").write_text('{"name": "p", "values": [1], "channels": {"SR": [NaN]}}')
    return lambda: collect_output(wd, None, "p", (1.0,))


# (id, make the call from tmp_path, error type name, fragments of its message)
ROWS = [
    ("traversal-name", lambda t: _recast(t, "../../outside/victim"), "ConfigError", ["'--point'", "letters"]),
    ("dotdot-name", lambda t: _recast(t, ".."), "ConfigError", ["'--point'"]),
    ("dotdot-inside-name", lambda t: _recast(t, "a..b"), "ConfigError", ["no '..'"]),
    ("absolute-name", lambda t: _recast(t, str(t / "outside" / "victim")), "ConfigError", ["'--point'"]),
    ("shell-subst-name", lambda t: _recast(t, "x$(touch ../outside/pwned)"), "ConfigError", ["'--point'"]),
    ("shell-semicolon-name", lambda t: _recast(t, "a;touch pwned"), "ConfigError", ["'--point'"]),
    ("backtick-name", lambda t: _recast(t, "a`id`"), "ConfigError", ["'--point'"]),
    ("quote-name", lambda t: _recast(t, "it's"), "ConfigError", ["'--point'"]),
    ("option-name", lambda t: _recast(t, "-rf"), "ConfigError", ["'--point'"]),
    ("non-ascii-name", lambda t: _recast(t, "p\u00e9int"), "ConfigError", ["'--point'"]),
    ("newline-name", lambda t: _recast(t, "p\nx"), "ConfigError", ["'--point'"]),
    ("huge-name", lambda t: _recast(t, "p" * 100_000), "ConfigError", ["at most 128 characters"]),
    (
        "huge-value",
        lambda t: _recast(t, "p", values=("m_parent=1e300", "m_LSP=0")),
        "ConfigError",
        ["--values m_parent", "|v| <= 1e+15"],
    ),
    ("inf-value", lambda t: _recast(t, "p", values=("m_parent=1e999", "m_LSP=0")), "ConfigError", ["finite"]),
    ("nan-value", lambda t: _recast(t, "p", values=("m_parent=nan", "m_LSP=0")), "ConfigError", ["finite"]),
    (
        "shell-value",
        lambda t: _recast(t, "p", values=("m_parent=$(touch pwned)", "m_LSP=0")),
        "ConfigError",
        ["PARAM=NUMBER"],
    ),
    (
        "shell-parameter-name",
        lambda t: _recast(t, "p", values=("m;touch pwned=1", "m_LSP=0")),
        "InputError",
        ["parameter names made of letters"],
    ),
    (
        "reserved-parameter",
        lambda t: _recast(t, "p", values=("python=1",)),
        "InputError",
        ["'python' is reserved"],
    ),
    (
        "missing-spec",
        lambda t: lambda: run_point(t / "results" / "nowhere", "p", {"m": 1.0}, t / "results" / "p.json"),
        "InputError",
        ["nowhere/workflow.yml", "yadage workflow spec not found"],
    ),
    (
        "workflow-outside-spec",
        lambda t: _recast(t, "p", "--workflow", "../../../outside/secret/BkgOnly.json"),
        "InputError",
        ["must lie inside the spec folder"],
    ),
    ("workdir-symlink-out", _symlinked_workdir, "InputError", ["would lie outside"]),
    ("log-symlink-out", _symlinked_log, "InputError", ["recast log would lie outside"]),
    ("workdir-dotdot", lambda t: _recast(t, "p", "--workdir", str(t / "results" / "..")), "InputError", []),
    ("foreign-workdir", _foreign_workdir, "RecastError", ["was not made by recastfit"]),
    (
        "template-attribute",
        lambda t: _recast(t, "p", "--input", "x={point.__init__.__globals__}"),
        "InputError",
        ["inputs.x", "expected plain {name} references"],
    ),
    (
        "quote-in-input",
        lambda t: _recast(t, "p", "--input", "x=a'$(touch pwned)'"),
        "InputError",
        ["inputs.x", "no single quote"],
    ),
    ("backend-syntax", lambda t: _recast(t, "p", "--backend", "x;touch pwned"), "InputError", ["backend"]),
    ("bad-timeout", lambda t: _recast(t, "p", "--timeout", "nan"), "InputError", ["timeout"]),
    ("output-glob-escape", _escaping_output, "RecastError", ["matched 0 files"]),
    ("output-symlink-out", _linked_output, "RecastError", ["matched 0 files"]),
    ("nan-yields-output", _nan_output, "InputError", ["yields.json", "NaN"]),  # strict JSON refuses it
    ("yadage-failure", _failing_step, "RecastError", ["yadage-run failed (exit", "log: ", "bad_point.log"]),
    ("yadage-timeout", _hanging_step, "RecastError", ["exceeded 6 s and was killed", "log: ", "slow.log"]),
]


@pytest.mark.parametrize(("row", "make", "error", "fragments"), ROWS, ids=[r[0] for r in ROWS])
def test_hostile_recast(tmp_path, monkeypatch, row, make, error, fragments) -> None:
    results = tmp_path / "results"
    stored = results / "demo" / "yields"
    stored.mkdir(parents=True)
    good = demo.demo_points([(400.0, 0.0)])[0]
    (stored / "demo_400_0.json").write_text(json.dumps(good.to_dict()))
    markers = planted_markers(tmp_path, watch=[stored])
    monkeypatch.chdir(results)
    call = make(tmp_path)
    before = set(os.listdir(results))
    outcome = run_bounded(call, seconds=10, max_mb=500)
    outcome.expect(error, *fragments)
    assert outcome.recastfit, outcome.message
    check_markers(markers)
    assert not (tmp_path / "pwned").exists() and not (results / "pwned").exists()
    if row != "yadage-timeout" and row != "yadage-failure":
        assert set(os.listdir(results)) == before, "nothing is created before the arguments are checked"
    if row == "yadage-failure":
        log = results / "demo" / "recast" / "bad_point.log"
        assert "demo_step: error: m_LSP=400.0 must be below m_parent=300.0" in outcome.message
        assert str(log) in outcome.message and "yadage-run" in log.read_text()
    if row == "yadage-timeout":  # the whole process group is gone, the step included
        pid = int((results / "demo" / "recast" / "slow" / "sleep" / "step.pid").read_text())
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"the step (pid {pid}) survived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except OSError:
        return False


def test_cli_prints_the_named_error(tmp_path, capsys) -> None:
    """Through `main`, a hostile point name is a one-line error and exit status 2."""
    out = tmp_path / "results" / "y.json"
    argv = ["recast", "--spec", str(DEMO_SPEC), "--point", "../../x", "--out", str(out), "--values", "m=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("recastfit recast: error: <command line>: key '--point': expected a name made of")
    assert not (tmp_path / "results").exists()
