"""Run a preserved analysis (a yadage workflow) for one theory point and collect its yields.

:func:`run_point` is the single entry point: it runs ``yadage-run`` for one point in a fresh
work directory, reads the workflow's output (a yields file ``{name, values, channels}`` or a
ROOT file with one TH1 per region), renames its regions to workspace channels and writes the
point's yields file.

Untrusted names and values never reach a shell or leave the results folder:

* the point name must pass :func:`recastfit.names.check_name`; grid values must be finite
  numbers (``|v| <= 1e15``); parameter names are identifiers;
* the point is handed to the workflow as a JSON file, ``<workdir>/_recastfit/point.json``
  (``{name, values}``); its path is the workflow input ``params``. The workflow's inputs go
  to ``yadage-run`` as a JSON init file too (never ``-p key=value``, which yadage parses as
  YAML), and ``yadage-run`` runs from an argv list, without a shell, in its own process
  group, killed as a whole after ``timeout`` seconds;
* a spec interpolates inputs into its commands between single quotes (``'{params}'``); every
  input value (and the work dir path, which yadage interpolates as ``{workdir}``) is refused
  if it holds a single quote or a control character, so a quoted value is one shell word;
* the work dir and log lie inside their own folder (``<out>/../../recast/`` or the parent of
  ``workdir``), checked after resolving links; an existing work dir is removed only if
  recastfit made it (it holds the marker file :data:`MARKER`) or it is empty.

Workflow inputs are built from ``inputs``: a mapping yadage parameter -> template made of
``{field}`` references only; fields are the grid parameters (formatted with ``:g``),
``point`` (the name), ``python`` (this interpreter) and ``params`` (the point file). By
default every grid parameter, ``point``, ``python`` and ``params`` are passed under their own
names.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from recastfit.errors import InputError, RecastfitError
from recastfit.fileio import ensure_inside, inside, write_json_atomic
from recastfit.limits import limit
from recastfit.names import check_name
from recastfit.signals.model import PointYields
from recastfit.signals.yields_file import read_yields_file

__all__ = [
    "DEFAULT_OUTPUTS",
    "MARKER",
    "MAX_VALUE",
    "RESERVED_FIELDS",
    "RecastError",
    "check_values",
    "check_input_value",
    "yadage_inputs",
    "yadage_command",
    "collect_output",
    "prepare_workdir",
    "run_point",
]

log = logging.getLogger(__name__)
_ERROR_LINE = re.compile(r"error:|\|\s*ERROR\s*\||Workflow failed", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BACKEND = re.compile(r"^[A-Za-z0-9_.:+-]+$")
_UNSAFE = re.compile(r"['\x00-\x1f\x7f]")
_MAX_INPUT_CHARS = 4096

#: where a workflow's yields are looked for when no ``output`` is named (first match wins)
DEFAULT_OUTPUTS = ("**/yields.json", "**/yields.yaml", "**/yields.yml", "**/*.root")
#: the file that marks a work dir as made by recastfit (only such a folder is ever removed)
MARKER = ".recastfit-recast"
#: the largest grid value accepted (in absolute value)
MAX_VALUE = 1e15
#: template fields recastfit fills itself (no grid parameter may carry these names)
RESERVED_FIELDS = ("point", "python", "params")
#: folders of the work dir that never hold the workflow's output
_INTERNAL = ("_packtivity", "_yadage", "_recastfit")


class RecastError(RecastfitError):
    """``yadage-run`` failed, timed out or produced no usable output for a point."""


def check_values(values: Mapping[str, object], *, file: str, key: str) -> dict[str, float]:
    """The grid values as floats: identifier keys, finite numbers with ``|v| <= MAX_VALUE``.

    >>> check_values({"m1": 500, "m2": 12.5}, file="c.yaml", key="values")
    {'m1': 500.0, 'm2': 12.5}
    >>> check_values({"m1": float("nan")}, file="c.yaml", key="values")
    Traceback (most recent call last):
    ...
    recastfit.errors.InputError: c.yaml: values.m1: expected a finite number with |v| <= 1e+15, got nan
    """
    if not isinstance(values, Mapping) or not values:
        raise InputError(file, key, f"expected a mapping parameter -> number, got {values!r}")
    out = {}
    for name, v in values.items():
        if not isinstance(name, str) or not _IDENTIFIER.match(name) or len(name) > 64:
            raise InputError(
                file, key, f"expected parameter names made of letters, digits and _, got {name!r}"
            )
        if name in RESERVED_FIELDS:
            raise InputError(file, f"{key}.{name}", f"'{name}' is reserved; rename the grid parameter")
        ok = (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and abs(v) <= MAX_VALUE
        )
        if not ok:
            raise InputError(
                file, f"{key}.{name}", f"expected a finite number with |v| <= {MAX_VALUE:g}, got {v!r}"
            )
        out[name] = float(v)
    return out


def check_input_value(value: str, *, file: str, key: str) -> str:
    """``value`` if it is safe inside single quotes in a shell command (no ``'``, no control chars).

    >>> check_input_value("/data/P1 file.root", file="recast", key="inputs.daod")
    '/data/P1 file.root'
    >>> check_input_value("x'; rm -rf ~ '", file="recast", key="inputs.daod")
    Traceback (most recent call last):
    ...
    recastfit.errors.InputError: recast: inputs.daod: expected no single quote or control character \
(the spec quotes it for the shell), got "x'; rm -rf ~ '"
    """
    if len(value) > _MAX_INPUT_CHARS or _UNSAFE.search(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        what = f"at most {_MAX_INPUT_CHARS} characters" if len(value) > _MAX_INPUT_CHARS else ""
        raise InputError(
            file,
            key,
            f"expected {what or 'no single quote or control character'} (the spec quotes it for the shell), "
            f"got {shown!r}",
        )
    return value


def _template_fields(template: str, known: Sequence[str], *, file: str, key: str) -> None:
    """Refuse a template that is not plain text plus ``{field}`` references to ``known`` fields."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(file, key, f"template {template!r} is malformed ({exc})") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in known or spec or conversion:
            problem = f"an unknown field {{{field}}}" if field not in known else "a format spec or conversion"
            raise InputError(
                file,
                key,
                f"template {template!r} uses {problem}; "
                f"expected plain {{name}} references to {sorted(known)}",
            )


def yadage_inputs(
    name: str,
    values: Mapping[str, float],
    inputs: Mapping[str, str] | None = None,
    *,
    python: str | None = None,
    params: Path | str | None = None,
    source: str = "recast",
) -> dict[str, str]:
    """The workflow inputs of one point: ``inputs`` templates filled with values, point, python, params.

    >>> yadage_inputs("p1", {"m1": 500.0, "m2": 12.5}, {"mass": "{m1}", "tag": "{point}_{m2}"})
    {'mass': '500', 'tag': 'p1_12.5'}
    """
    fields: dict[str, str] = {k: f"{float(v):g}" for k, v in values.items()}
    fields.update(point=name, python=python or sys.executable)
    if params is not None:
        fields["params"] = str(params)
    if inputs is None:
        templates = {k: "{" + k + "}" for k in fields}
    else:
        templates = dict(inputs)
    out = {}
    for key, template in templates.items():
        where = f"inputs.{key}"
        if not isinstance(key, str) or not _IDENTIFIER.match(key):
            raise InputError(source, "inputs", f"expected yadage parameter names (identifiers), got {key!r}")
        if not isinstance(template, str | int | float) or isinstance(template, bool):
            raise InputError(source, where, f"expected a template string, got {template!r}")
        template = str(template)
        _template_fields(template, list(fields), file=source, key=where)
        out[key] = check_input_value(template.format(**fields), file=source, key=where)
    return out


def _yadage_executable() -> str:
    exe = shutil.which("yadage-run")
    if exe:
        return exe
    sibling = Path(sys.executable).with_name("yadage-run")
    if sibling.is_file():
        return str(sibling)
    raise RecastError("yadage-run not found on PATH (install yadage: pip install 'recastfit[recast]')")


def yadage_command(
    spec_dir: Path, workflow: str, workdir: Path, init_file: Path, backend: str | None = None
) -> list[str]:
    """The ``yadage-run`` argv (``-t`` resolves ``$ref`` step files inside ``spec_dir``).

    The inputs come from ``init_file`` (JSON), never from ``-p`` options.
    """
    cmd = [_yadage_executable(), str(workdir), workflow, str(init_file)]
    cmd += ["-t", str(Path(spec_dir).resolve()), "--no-visualize"]
    if backend:
        if not _BACKEND.match(backend):
            raise InputError("recast", "backend", f"expected a packtivity backend string, got {backend!r}")
        cmd += ["-b", backend]
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
    must match exactly one regular file inside ``workdir`` (links are followed and checked).
    """
    workdir = Path(workdir)
    matches: list[Path] = []
    for pattern in [output] if output else DEFAULT_OUTPUTS:
        try:
            found = workdir.glob(pattern)
            matches = sorted(
                p
                for p in found
                if p.is_file()
                and not set(_INTERNAL) & set(p.relative_to(workdir).parts)
                and inside(p, workdir)
            )
        except (ValueError, NotImplementedError) as exc:  # absolute or malformed glob
            raise InputError(
                "recast", "output", f"expected a glob inside the work dir, got {pattern!r} ({exc})"
            ) from None
        if matches:
            break
    if len(matches) != 1:
        found_files = sorted(
            str(p.relative_to(workdir))
            for p in workdir.rglob("*")
            if p.is_file() and not set(_INTERNAL) & set(p.relative_to(workdir).parts)
        )
        raise RecastError(
            f"{workdir}: output {output or DEFAULT_OUTPUTS!r} matched {len(matches)} files "
            "(expected exactly 1); "
            f"files written by the workflow: {found_files[:20]}"
        )
    path = matches[0]
    if path.suffix.lower() == ".root":
        from recastfit.signals.root_hists import read_root_point

        return read_root_point(path, name, values, pattern=histogram, regions=regions)
    _, points = read_yields_file(path)
    if len(points) != 1:
        raise InputError(str(path), "points", f"expected the yields of one point, got {len(points)}")
    channels = dict(points[0].channels)
    if regions:
        missing = [r for r in regions if r not in channels]
        if missing:
            raise InputError(
                str(path), "channels", f"region(s) {missing} missing; present: {sorted(channels)}"
            )
        channels = {ch: channels[r] for r, ch in regions.items()}
    return PointYields(name, tuple(float(v) for v in values), channels)


def prepare_workdir(workdir: Path, root: Path) -> Path:
    """Make ``workdir`` (inside ``root``) fresh and marked; returns its resolved path.

    An existing work dir is removed only when it holds :data:`MARKER` (recastfit made it) or is
    empty; a link, a file, or someone else's folder is refused with :class:`RecastError`.
    """
    workdir, root = Path(workdir), Path(root)
    ensure_inside(workdir, root, what="recast work dir")
    if workdir.is_symlink() or (workdir.exists() and not workdir.is_dir()):
        raise RecastError(f"{workdir}: the recast work dir is a link or a file; refusing to replace it")
    if workdir.is_dir():
        if (workdir / MARKER).is_file():
            shutil.rmtree(workdir)
        elif any(workdir.iterdir()):
            raise RecastError(
                f"{workdir}: the recast work dir exists and was not made by recastfit (no {MARKER}); "
                "remove it yourself or choose another --workdir"
            )
        else:
            workdir.rmdir()
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("made by recastfit recast; removed and recreated on each run\n")
    return Path(os.path.realpath(workdir))


def _run(cmd: list[str], logfile: Path, cwd: Path, timeout: float, name: str) -> int:
    """Run ``cmd`` in its own process group, output to ``logfile``; kill the whole group on timeout."""
    logfile.unlink(missing_ok=True)  # a new file: never write through a hard link to someone else's
    with logfile.open("x") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise RecastError(f"point '{name}': cannot start yadage-run: {exc}; log: {logfile}") from None
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise RecastError(
                f"point '{name}': yadage-run exceeded {timeout:g} s and was killed; log: {logfile}"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


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
    source: str = "recast",
) -> PointYields:
    """Run the workflow for one point and write its yields file to ``out``; returns the yields.

    ``workdir`` defaults to ``<out's folder>/../recast/<name>``; the yadage log goes to
    ``<workdir>.log``. ``timeout`` defaults to the limit ``recast_timeout_s``. ``source`` names
    where the arguments came from in error messages (a config file, ``<command line>``).
    Nothing is created or removed before every argument is checked.
    """
    name = check_name(name, file=source, key="point")
    vals = check_values(values, file=source, key="values")
    spec_dir = Path(spec_dir)
    if not isinstance(workflow, str) or not inside(spec_dir / workflow, spec_dir):
        raise InputError(
            str(spec_dir / str(workflow)), None, f"the workflow must lie inside the spec folder {spec_dir}"
        )
    if not (spec_dir / workflow).is_file():
        raise InputError(str(spec_dir / workflow), None, "yadage workflow spec not found")
    timeout = float(timeout) if timeout is not None else limit("recast_timeout_s")
    if not (math.isfinite(timeout) and timeout > 0):
        raise InputError(source, "timeout", f"expected a positive number of seconds, got {timeout!r}")
    out = Path(out)
    if workdir is None:
        root = out.parent.parent / "recast"
        workdir = root / name
    else:
        workdir = Path(workdir)
        root = workdir.parent
    ensure_inside(workdir, root, what="recast work dir")
    logfile = workdir.with_name(workdir.name + ".log")
    ensure_inside(logfile, root, what="recast log")
    if logfile.is_symlink() or (logfile.exists() and not logfile.is_file()):
        raise RecastError(f"{logfile}: the recast log is a link or not a file; refusing to write through it")
    check_input_value(os.path.realpath(workdir), file=source, key="workdir")
    point_file = Path(os.path.realpath(workdir)) / "_recastfit" / "point.json"
    params = yadage_inputs(name, vals, inputs, python=python, params=point_file, source=source)
    init_file = point_file.with_name("inputs.json")
    cmd = yadage_command(spec_dir, workflow, Path(os.path.realpath(workdir)), init_file, backend)

    workdir = prepare_workdir(workdir, root)
    write_json_atomic(point_file, {"name": name, "values": vals})
    write_json_atomic(init_file, params)
    t0 = time.perf_counter()
    rc = _run(cmd, logfile, workdir.parent, timeout, name)
    if rc != 0:
        lines = logfile.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if _ERROR_LINE.search(ln) and not ln.startswith((" ", "Traceback"))]
        errors = list(dict.fromkeys(errors))[:5] or lines[-3:]
        raise RecastError(
            f"point '{name}': yadage-run failed (exit {rc}); log: {logfile}\n  " + "\n  ".join(errors)
        )
    point = collect_output(workdir, output, name, list(vals.values()), regions=regions, histogram=histogram)
    write_json_atomic(out, point.to_dict())
    log.info("recast %s: %.1f s, %d channels -> %s", name, time.perf_counter() - t0, len(point.channels), out)
    return point
