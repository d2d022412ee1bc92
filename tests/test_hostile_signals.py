"""Hostile or malformed signal inputs: each row must end in a named error (ConfigError/InputError
naming the file and key) within 10 s and 500 MB, touching nothing outside its results folder.

Each row runs in a forked child (a small harness: ``tests/hostile.py`` is not on main yet) with
its address space capped, so a YAML alias bomb or an expanding efficiency map cannot take the
machine down; marker files planted beside the inputs are checked untouched afterwards.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from recastfit.errors import ConfigError, InputError, RecastfitError
from recastfit.pallet import legacy_patchset, load_patchset
from recastfit.patches import build_patchset
from recastfit.signals.effmap import read_effmap
from recastfit.signals.sources import load_signal_points
from recastfit.signals.spec import parse_signal
from recastfit.signals.xsec import load_xsec_table

SECONDS, MAX_MB = 10.0, 500
PARAMS = ["m1", "m2"]
BOMB = "a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=False)
)


def _bkg(n: int = 3) -> dict:
    names = ["SRA", "SRB", "CR"][:n]
    return {
        "channels": [{"name": c, "samples": [{"name": "b", "data": [5.0], "modifiers": []}]} for c in names],
        "observations": [{"name": c, "data": [5.0]} for c in names],
        "measurements": [{"name": "m", "config": {"poi": "mu_SIG", "parameters": []}}],
        "version": "1.0.0",
    }


def _yields(tmp: Path, body: str, suffix: str = ".yaml") -> Callable[[], object]:
    (tmp / f"y{suffix}").write_text(body)
    return lambda: _load({"type": "yields", "path": f"y{suffix}"}, tmp)


def _load(section: dict, tmp: Path, bkg: dict | None = None) -> object:
    spec = parse_signal(section, file="c.yaml", parameters=PARAMS, base_dir=tmp)
    return load_signal_points(spec, bkg_spec=bkg or _bkg(), parameters=PARAMS, results_dir=tmp / "results")


def _point(name: str = "P_1_2", values: str = "[1, 2]", sra: str = "[1.0]", extra: str = "") -> str:
    return f"points:\n  - {{name: {name}, values: {values}, channels: {{SRA: {sra}}}{extra}}}\n"


def _effmap_folder(tmp: Path, body: str | None = None) -> Path:
    (tmp / "A").mkdir(exist_ok=True)
    body = body or "[[[[100*GeV,0*GeV],[100*GeV,0*GeV]],0.1],[[[200*GeV,0*GeV],[200*GeV,0*GeV]],0.2]]"
    (tmp / "A" / "TX.txt").write_text(f"txName: TX\nefficiencyMap: {body}\n")
    (tmp / "globalInfo.txt").write_text(
        "id: T\nlumi: 10/fb\njsonFiles: {'w.json': [{'smodels': 'A', 'pyhf': 'SRA'}]}\n"
    )
    if not (tmp / "xs.json").exists():
        (tmp / "xs.json").write_text(json.dumps({"100": 1.0, "200": 0.5}))
    return tmp


def _effmap(tmp: Path, **extra: object) -> Callable[[], object]:
    _effmap_folder(tmp)
    return lambda: _load({"type": "effmap", "path": str(tmp), "xsec": "xs.json", **extra}, tmp)


def _patchset(tmp: Path, ops: list, name: str = "P_1_2", values: list | None = None) -> Callable[[], object]:
    import pyhf

    bkg = _bkg()
    spec = {
        "metadata": {
            "name": "t",
            "description": "t",
            "digests": {"sha256": pyhf.utils.digest(bkg)},
            "labels": PARAMS,
            "references": {"hepdata": "ins0000000"},
        },
        "patches": [{"metadata": {"name": name, "values": values or [1, 2]}, "patch": ops}],
        "version": "1.0.0",
    }
    (tmp / "ps.json").write_text(json.dumps(spec))
    return lambda: load_patchset(tmp / "ps.json", bkg)


def _legacy(tmp: Path, ops: list) -> Callable[[], object]:
    (tmp / "patches").mkdir()
    (tmp / "patches" / "patch.P_1_2.json").write_text(json.dumps(ops))
    return lambda: legacy_patchset(tmp / "patches", _bkg(), PARAMS)


def _slha(tmp: Path, text: str) -> Callable[[], object]:
    _effmap_folder(tmp)
    (tmp / "slha").mkdir()
    (tmp / "slha" / "p.slha").write_text(text)
    section = {
        "type": "effmap",
        "path": str(tmp),
        "slha": "slha",
        "masses": {"m1": 1000024, "m2": 1000022},
        "xsec_process": {"final": [1000023, 1000024]},
    }
    return lambda: _load(section, tmp)


def _xsec(tmp: Path, text: str, name: str = "xs.json") -> Callable[[], object]:
    (tmp / name).write_text(text)
    return lambda: load_xsec_table(tmp / name)


def _huge_effmap(tmp: Path) -> Callable[[], object]:
    (tmp / "A").mkdir()
    with open(tmp / "A" / "TX.txt", "wb") as fh:  # sparse: 80 MB on paper, nothing on disk
        fh.write(b"txName: TX\nefficiencyMap: [")
        fh.truncate(80 << 20)
    return lambda: read_effmap(tmp / "A" / "TX.txt")


def _per_point(tmp: Path) -> Callable[[], object]:
    (tmp / "y.yaml").write_text(_point())
    return lambda: _load(
        {"type": "yields", "path": "y.yaml", "options": {"theory_uncertainty": "per_point"}}, tmp
    )


def _recast_missing(tmp: Path) -> Callable[[], object]:
    (tmp / "spec").mkdir()
    (tmp / "spec" / "workflow.yml").write_text("stages: []\n")
    section = {"type": "recast", "spec": "spec", "points": [{"name": "P_1_2", "values": [1, 2]}]}
    return lambda: _load(section, tmp)


def _build(tmp: Path, name: str) -> Callable[[], object]:
    return lambda: build_patchset(_bkg(), _pts(name), parameters=PARAMS)


def _pts(name: str) -> list:
    from recastfit.signals.model import ChannelYields, PointYields

    return [PointYields(name, (1.0, 2.0), {"SRA": ChannelYields((1.0,))})]


def _with_file(path: Path, text: str, fn: Callable[[], object]) -> Callable[[], object]:
    path.write_text(text)
    return fn


def _map(tmp: Path, body: str) -> Callable[[], object]:
    _effmap_folder(tmp, body)
    return lambda: read_effmap(tmp / "A" / "TX.txt")


def _sparse(path: Path, size: int, fn: Callable[[], object]) -> Callable[[], object]:
    with open(path, "wb") as fh:  # sparse: large on paper, nothing on disk
        fh.truncate(size)
    return fn


ROWS: dict[str, tuple[Callable[[Path], Callable[[], object]], type, str]] = {
    # --- bounded parsing
    "alias bomb in a yields file": (lambda t: _yields(t, BOMB), InputError, "aliases are not allowed"),
    "alias bomb in a points file": (
        lambda t: _with_file(t / "pts.yaml", BOMB, _effmap(t, points="pts.yaml")),
        InputError,
        "pts.yaml: not valid YAML: YAML aliases are not allowed",
    ),
    "effmap [..]*30000000": (
        lambda t: _map(t, "[[[[100*GeV,0*GeV]],0.1]]*30000000"),
        InputError,
        "efficiencyMap: unexpected characters '\\*'",
    ),
    "effmap calling code": (
        lambda t: _map(t, "[[[[__import__('os').system('touch x')]],0.1]]"),
        InputError,
        "efficiencyMap: unexpected characters",
    ),
    "effmap of 80 MB": (_huge_effmap, InputError, "larger than 67108864 bytes .*RECASTFIT_MAX_EFFMAP_BYTES"),
    "yields file of 300 MB": (
        lambda t: _sparse(t / "y.yaml", 300 << 20, lambda: _load({"type": "yields", "path": "y.yaml"}, t)),
        InputError,
        "y.yaml: the yields file is larger than",
    ),
    # --- numbers
    "NaN literal in a JSON yields file": (
        lambda t: _yields(
            t, '{"points": [{"name": "P", "values": [1, 2], "channels": {"SRA": [NaN]}}]}', ".json"
        ),
        InputError,
        "y.json: not valid JSON: NaN is not a JSON number",
    ),
    "YAML .nan yield": (
        lambda t: _yields(t, _point(sra="[.nan]")),
        InputError,
        r"points\[0\].channels.SRA: expected finite",
    ),
    "1e308 yield": (
        lambda t: _yields(t, _point(sra="[1.0e+308]")),
        InputError,
        r"channels.SRA: expected finite numbers",
    ),
    "boolean yield": (lambda t: _yields(t, _point(sra="[true]")), InputError, "booleans are not numbers"),
    "boolean grid value in a yields file": (
        lambda t: _yields(t, _point(values="[true, 2]")),
        InputError,
        r"points\[0\].values: expected numbers",
    ),
    "1e308 grid value in the config": (
        lambda t: _effmap(t, points=[[1e308, 0]]),
        ConfigError,
        r"signal.points\[0\]\[0\]': expected a finite number",
    ),
    "boolean grid value in the config": (
        lambda t: _effmap(t, points=[[True, 0]]),
        ConfigError,
        r"signal.points\[0\]",
    ),
    "NaN window": (
        lambda t: _effmap(t, window={"m1": [float("nan"), 1]}),
        ConfigError,
        r"signal.window.m1\[0\]'",
    ),
    "NaN theory uncertainty": (
        lambda t: _effmap(t, options={"theory_uncertainty": float("nan")}),
        ConfigError,
        "signal.options.theory_uncertainty",
    ),
    "negative theory uncertainty": (
        lambda t: _effmap(t, options={"theory_uncertainty": -0.1}),
        ConfigError,
        "signal.options.theory_uncertainty",
    ),
    "NaN theory in a yields file": (
        lambda t: _yields(t, _point(extra=", theory: .nan")),
        InputError,
        r"points\[0\].theory: expected finite",
    ),
    "per_point without per-point values": (
        _per_point,
        ConfigError,
        "signal.options.theory_uncertainty': expected per-point theory values .* got 'P_1_2'",
    ),
    "NaN in a cross-section table": (lambda t: _xsec(t, '{"100": NaN}'), InputError, "not valid JSON"),
    "boolean in a cross-section table": (
        lambda t: _xsec(t, "100: true\n200: 0.5\n", "xs.yaml"),
        InputError,
        r"xs.yaml: 100: expected a number",
    ),
    "1e308 in a text cross-section table": (
        lambda t: _xsec(t, "100 1.0\n200 1e308\n", "xs.txt"),
        InputError,
        "xs.txt: line 2: expected a finite number",
    ),
    "efficiency above 1": (
        lambda t: _map(t, "[[[[100*GeV,0*GeV]],7.5]]"),
        InputError,
        r"efficiencyMap\[0\]: efficiency must be in \[0, 1\]",
    ),
    # --- patches
    "patch op on channel 9 of 3 (patchset)": (
        lambda t: _patchset(t, [{"op": "remove", "path": "/channels/9/samples/0"}]),
        InputError,
        r"ps.json: patches\[0\].patch\[0\]: op 'remove' /channels/9/samples/0 does not apply .* 3 channel",
    ),
    "patch op on channel 9 of 3 (legacy folder)": (
        lambda t: _legacy(t, [{"op": "add", "path": "/channels/9/samples/0", "value": {}}]),
        InputError,
        r"patch.P_1_2.json: patch.patch\[0\]: op 'add'",
    ),
    "patch op on a missing key": (
        lambda t: _legacy(t, [{"op": "replace", "path": "/nothing/here", "value": 1}]),
        InputError,
        "does not apply to the workspace",
    ),
    # --- names and duplicates
    "duplicate point values in a yields file": (
        lambda t: _yields(t, _point("A") + _point("B").removeprefix("points:\n")),
        InputError,
        r"points\[1\]: duplicate point values",
    ),
    "duplicate point values in the config": (
        lambda t: _effmap(t, points=[{"name": "a", "values": [1, 2]}, {"name": "b", "values": [1, 2]}]),
        ConfigError,
        r"signal.points\[1\]': expected distinct point values",
    ),
    "duplicate point values in a patchset": (
        lambda t: lambda: build_patchset(_bkg(), [*_pts("A"), *_pts("B")], parameters=PARAMS),
        InputError,
        "same values",
    ),
    "non-ASCII point name": (
        lambda t: _yields(t, _point(name="stäu_1_2")),
        InputError,
        r"points\[0\].name: expected a name made of letters",
    ),
    "../x point name in the config": (
        lambda t: _effmap(t, points=[{"name": "../x", "values": [1, 2]}]),
        ConfigError,
        r"signal.points\[0\].name': expected a name made of",
    ),
    "../x point name in a patchset": (
        lambda t: _patchset(t, [], name="../x"),
        InputError,
        r"patches\[0\].metadata.name: expected a name",
    ),
    "shell syntax in a built point name": (
        lambda t: _build(t, "x$(touch y)"),
        InputError,
        "expected a name made of",
    ),
    # --- config keys and files
    "mistyped key xsex": (
        lambda t: _effmap(t, xsex="xs.json"),
        ConfigError,
        "signal.xsex': expected no such key for type 'effmap'",
    ),
    "bad SLHA file": (lambda t: _slha(t, "this is not SLHA\n"), InputError, r"p.slha: MASS: no MASS block"),
    "SLHA with a NaN mass": (
        lambda t: _slha(t, "BLOCK MASS\n 1000024 nan\n 1000022 1.0\n"),
        InputError,
        r"p.slha: MASS 1000024: expected a finite number",
    ),
    "SLHA without the process": (
        lambda t: _slha(t, "BLOCK MASS\n 1000024 100\n 1000022 1.0\n"),
        InputError,
        r"p.slha: XSECTION .*missing",
    ),
    "recast yields not produced": (_recast_missing, InputError, "P_1_2.json: missing: .* recast rule"),
}


@dataclass
class Outcome:
    error: str | None
    message: str
    seconds: float
    peak_mb: float


def _vm_kb(field: str, pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _child(fn: Callable[[], object], conn) -> None:  # noqa: ANN001 - a multiprocessing Connection
    start_rss = _vm_kb("VmRSS")
    conn.send(start_rss)
    try:
        fn()
        error, message = None, "no error"
    except MemoryError:
        error, message = "MemoryError", ""
    except Exception as exc:  # reported to the parent, which asserts on it
        error, message = (
            type(exc).__name__,
            str(exc) if isinstance(exc, RecastfitError) else traceback.format_exc(),
        )
    peak = (_vm_kb("VmHWM") - start_rss) / 1024
    conn.send((error, message[:2000], peak))


def run_bounded(fn: Callable[[], object]) -> Outcome:
    """Run ``fn`` in a forked child; kill it past SECONDS or when its RSS grows by MAX_MB."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, child))
    t0 = time.monotonic()
    proc.start()
    start_rss = parent.recv() if parent.poll(SECONDS) else 0
    while not parent.poll(0.02):
        elapsed = time.monotonic() - t0
        grown = (_vm_kb("VmRSS", proc.pid) - start_rss) / 1024
        if elapsed > SECONDS or grown > MAX_MB or not proc.is_alive():
            proc.kill()
            proc.join()
            why = (
                "died" if not proc.is_alive() and elapsed <= SECONDS and grown <= MAX_MB else "bound exceeded"
            )
            return Outcome("Unbounded", f"{why}: {elapsed:.1f} s, +{grown:.0f} MB", elapsed, grown)
    error, message, peak = parent.recv()
    elapsed = time.monotonic() - t0
    proc.join(5)
    return Outcome(error, message, elapsed, peak)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_dir()
    }


@pytest.mark.parametrize("row", list(ROWS))
def test_hostile_signal_input(row, tmp_path) -> None:
    make, error, pattern = ROWS[row]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "marker.txt").write_text("do not touch")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "y").write_text("marker beside the inputs")
    fn = make(work)
    before = {**_snapshot(outside), **{"y": (tmp_path / "y").stat().st_size}}
    inputs = _snapshot(work)
    out = run_bounded(fn)
    assert out.error == error.__name__, (row, out)
    assert re.search(pattern, out.message), (row, out.message)
    assert out.seconds < SECONDS and out.peak_mb < MAX_MB, (row, out)
    after = {**_snapshot(outside), **{"y": (tmp_path / "y").stat().st_size}}
    assert after == before, row
    created = {k for k in _snapshot(work) if k not in inputs and not k.startswith("results")}
    assert not created, (row, created)
    assert not (work / "x").exists() and not (tmp_path / "x").exists()


def test_the_table_is_large_enough() -> None:
    assert len(ROWS) >= 15
