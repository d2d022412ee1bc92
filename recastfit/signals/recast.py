"""Run a preserved analysis (a yadage workflow) for one theory point and collect its yields.

``run_point`` calls ``yadage-run`` with the point's parameters, in a fresh work directory
(``<workdir>``, removed and recreated for each run), then reads the workflow's output, a
yields file (JSON/YAML, ``{name, values, channels}`` or a one-point ``points`` list) or a
ROOT file with one TH1 per region, renames its regions to workspace channels and writes the
point's ``yields/<point>.json``.

Workflow inputs (``-p key=value``) are built from ``inputs``: a mapping yadage parameter ->
template formatted with the grid values by parameter name, ``{point}`` (the point name) and
``{python}`` (this interpreter). By default every grid parameter, ``point`` and ``python``
are passed under their own names.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from recastfit.errors import InputError, RecastfitError
from recastfit.fileio import write_json_atomic
from recastfit.signals.model import PointYields
from recastfit.signals.yields_file import read_yields_file

__all__ = ["DEFAULT_OUTPUTS", "RecastError", "yadage_inputs", "run_point", "collect_output", "yadage_command"]

log = logging.getLogger(__name__)
_ERROR_LINE = re.compile(r"error:|\|\s*ERROR\s*\||Workflow failed", re.IGNORECASE)

#: where a workflow's yields are looked for when no ``output`` is named (first match wins)
DEFAULT_OUTPUTS = ("**/yields.json", "**/yields.yaml", "**/yields.yml", "**/*.root")


class RecastError(RecastfitError):
    """``yadage-run`` failed or produced no usable output for a point."""


def yadage_inputs(
    name: str,
    values: Mapping[str, float],
    inputs: Mapping[str, str] | None = None,
    *,
    python: str | None = None,
) -> dict[str, str]:
    """The ``-p`` parameters of one point: ``inputs`` templates filled with values, point, python."""
    fields: dict[str, object] = {k: f"{float(v):g}" for k, v in values.items()}
    fields.update(point=name, python=python or sys.executable)
    templates = {k: "{" + k + "}" for k in (*values, "point", "python")} if inputs is None else dict(inputs)
    out = {}
    for key, template in templates.items():
        try:
            out[key] = str(template).format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(
                "recast",
                f"inputs.{key}",
                f"template {template!r} uses an unknown field ({exc}); known: {sorted(fields)}",
            ) from None
    return out


def yadage_command(
    spec_dir: Path, workflow: str, workdir: Path, params: Mapping[str, str], backend: str | None = None
) -> list[str]:
    """The ``yadage-run`` command line (``-t`` resolves ``$ref`` step files inside ``spec_dir``)."""
    exe = shutil.which("yadage-run") or str(Path(sys.executable).with_name("yadage-run"))
    cmd = [exe, str(workdir), workflow, "-t", str(Path(spec_dir).resolve()), "--no-visualize"]
    if backend:
        cmd += ["-b", backend]
    for key, value in params.items():
        cmd += ["-p", f"{key}={value}"]
    return cmd


def collect_output(
    workdir: Path,
    output: str | None,
    name: str,
    values: Sequence[float],
    *,
    regions: Mapping[str, str] | None = None,
    histogram: str = "{region}",
) -> PointYields:
    """Read the workflow's output file (``output``: a path or glob inside ``workdir``).

    Without ``output`` the first of :data:`DEFAULT_OUTPUTS` that matches is used; the glob
    must match exactly one file.
    """
    for pattern in [output] if output else DEFAULT_OUTPUTS:
        matches = sorted(
            p for p in Path(workdir).glob(pattern) if p.is_file() and "_packtivity" not in p.parts
        )
        if matches:
            break
    if len(matches) != 1:
        found = sorted(
            str(p.relative_to(workdir))
            for p in Path(workdir).rglob("*")
            if p.is_file() and "_packtivity" not in p.parts and "_yadage" not in p.parts
        )
        raise RecastError(
            f"{workdir}: output {output or DEFAULT_OUTPUTS!r} matched {len(matches)} files "
            "(expected exactly 1); "
            f"files written by the workflow: {found[:20]}"
        )
    path = matches[0]
    if path.suffix.lower() == ".root":
        from recastfit.signals.root_hists import read_root_point

        point = read_root_point(path, name, values, pattern=histogram, regions=regions)
        return point
    _, points = read_yields_file(path)
    if len(points) != 1:
        raise InputError(str(path), "points", f"expected the yields of one point, got {len(points)}")
    raw = points[0]
    channels = dict(raw.channels)
    if regions:
        missing = [r for r in regions if r not in channels]
        if missing:
            raise InputError(
                str(path), "channels", f"region(s) {missing} missing; present: {sorted(channels)}"
            )
        channels = {ch: channels[r] for r, ch in regions.items()}
    return PointYields(name, tuple(float(v) for v in values), channels)


def run_point(
    spec_dir: Path,
    name: str,
    values: Mapping[str, float],
    out: Path,
    *,
    workflow: str = "workflow.yml",
    workdir: Path | None = None,
    inputs: Mapping[str, str] | None = None,
    output: str | None = None,
    regions: Mapping[str, str] | None = None,
    histogram: str = "{region}",
    backend: str | None = None,
    python: str | None = None,
    timeout: float | None = None,
) -> PointYields:
    """Run the workflow for one point and write its yields file to ``out``; returns the yields.

    ``workdir`` defaults to ``<out's folder>/../recast/<name>``; the yadage log goes to
    ``<workdir>.log``.
    """
    spec_dir = Path(spec_dir)
    if not (spec_dir / workflow).is_file():
        raise InputError(str(spec_dir / workflow), None, "yadage workflow spec not found")
    out = Path(out)
    workdir = (Path(workdir) if workdir else out.parent.parent / "recast" / name).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    params = yadage_inputs(name, values, inputs, python=python)
    cmd = yadage_command(spec_dir, workflow, workdir, params, backend)
    logfile = workdir.with_name(workdir.name + ".log")
    t0 = time.perf_counter()
    with logfile.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            proc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False, cwd=workdir.parent
            )
        except subprocess.TimeoutExpired:
            raise RecastError(f"point '{name}': yadage-run exceeded {timeout} s; log: {logfile}") from None
    if proc.returncode != 0:
        lines = logfile.read_text().splitlines()
        errors = [ln for ln in lines if _ERROR_LINE.search(ln) and not ln.startswith((" ", "Traceback"))]
        errors = list(dict.fromkeys(errors))[:5] or lines[-3:]
        raise RecastError(
            f"point '{name}': yadage-run failed (exit {proc.returncode}); log: {logfile}\n  "
            + "\n  ".join(errors)
        )
    point = collect_output(workdir, output, name, list(values.values()), regions=regions, histogram=histogram)
    write_json_atomic(out, point.to_dict())
    log.info("recast %s: %.1f s, %d channels -> %s", name, time.perf_counter() - t0, len(point.channels), out)
    return point
