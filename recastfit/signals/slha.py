"""Grid points from a folder of SLHA files (pMSSM scans): masses from the MASS block, cross
sections from the XSECTION blocks, read with ``pyslha`` (extra ``slha``).

Each ``*.slha`` / ``*.slh`` / ``*.dat`` file of the folder is one point. Its grid values are
``|MASS[pdg]|`` for the PDG id of each grid parameter; its cross section is the sum over the
configured final states of the XSECTION entry at the highest QCD (then EW) order available
for that ``sqrt(s)`` and initial state (its central scale); the other entries at that order
(scale or PDF variations) give the relative up/down uncertainty used by
``theory_uncertainty: per_point``. Files are read size-capped (``limits.max_input_bytes``);
a file that is not SLHA, lacks a mass or the process, or gives a non-finite number is an
:class:`~recastfit.errors.InputError` naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recastfit.errors import InputError
from recastfit.fileio import read_text_capped
from recastfit.signals.model import MAX_ABS

__all__ = ["SlhaPoint", "read_slha_point", "read_slha_folder", "SLHA_SUFFIXES"]

SLHA_SUFFIXES = (".slha", ".slh", ".dat", ".spc")
_MAX_FILES = 1_000_000


@dataclass(frozen=True)
class SlhaPoint:
    """One SLHA file: its grid values (GeV), cross section (pb) and, when the file gives scale or
    PDF variations at that order, their envelope as relative (up, down) uncertainties."""

    file: str
    values: tuple[float, ...]
    xsec_pb: float
    theory: tuple[float, float] | None = None


def _finite(file: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(file, key, f"expected a finite number, got {value!r}")
    if abs(value) > MAX_ABS:
        raise InputError(file, key, f"expected |x| <= {MAX_ABS:g}, got {value!r}")
    return float(value)


def read_slha_point(
    path: Path,
    masses: Sequence[int],
    final: Sequence[Sequence[int]],
    *,
    initial: Sequence[int] | None = (2212, 2212),
    sqrts: float | None = None,
) -> SlhaPoint:
    """Read one SLHA file (see the module docstring)."""
    import pyslha

    file = str(path)
    text = read_text_capped(path, what="SLHA file")
    try:
        doc = pyslha.readSLHA(text, ignorenomass=True, ignorenobr=True)
    except Exception as exc:  # pyslha raises ParseError, ValueError, IndexError, ... on bad input
        raise InputError(file, None, f"not a readable SLHA file: {type(exc).__name__}: {exc}") from None
    block = doc.blocks.get("MASS")
    if block is None:
        raise InputError(file, "MASS", "no MASS block")
    values = []
    for pdg in masses:
        if pdg not in block:
            raise InputError(file, f"MASS {pdg}", "missing")
        values.append(abs(_finite(file, f"MASS {pdg}", block[pdg])))
    total = low = high = 0.0
    for state in final:
        want = tuple(sorted(int(p) for p in state))
        matches = [
            proc
            for proc in doc.xsections.values()
            if tuple(sorted(proc.pidsfinal)) == want
            and (initial is None or tuple(sorted(proc.pidsinitial)) == tuple(sorted(initial)))
        ]
        entries = [
            x for proc in matches for x in proc.xsecs if sqrts is None or abs(x.sqrts - float(sqrts)) < 1e-6
        ]
        if not entries:
            raise InputError(
                file,
                f"XSECTION {' '.join(map(str, initial or ()))} -> {' '.join(map(str, want))}",
                f"missing (sqrts {sqrts if sqrts is not None else 'any'}); "
                f"processes present: {[tuple(k) for k in doc.xsections][:10]}",
            )
        best = max(entries, key=lambda x: (x.qcd_order, x.ew_order))
        same = [x for x in entries if (x.qcd_order, x.ew_order) == (best.qcd_order, best.ew_order)]
        central = [x for x in same if x.kappa_f in (0, 1) and x.kappa_r in (0, 1)] or [best]
        found = [_finite(file, f"XSECTION {want}", x.value) for x in [central[0], *same]]
        if min(found) < 0:
            raise InputError(file, f"XSECTION {want}", f"expected cross sections >= 0, got {min(found)}")
        total, low, high = total + found[0], low + min(found), high + max(found)
    if not total > 0:
        raise InputError(file, "XSECTION", "the cross section of the configured process is 0")
    theory = (high / total - 1.0, 1.0 - low / total) if high > low else None
    return SlhaPoint(file, tuple(values), total, theory)


def read_slha_folder(
    folder: Path,
    masses: Sequence[int],
    final: Sequence[Sequence[int]],
    *,
    initial: Sequence[int] | None = (2212, 2212),
    sqrts: float | None = None,
) -> list[SlhaPoint]:
    """Every SLHA file of ``folder`` (sorted by name); two files with the same masses are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(str(folder), None, "SLHA folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLHA_SUFFIXES)
    if not files:
        raise InputError(str(folder), None, f"no SLHA files ({', '.join(SLHA_SUFFIXES)}) in this folder")
    if len(files) > _MAX_FILES:
        raise InputError(str(folder), None, f"more than {_MAX_FILES} SLHA files")
    points = [read_slha_point(f, masses, final, initial=initial, sqrts=sqrts) for f in files]
    seen: dict[tuple[float, ...], str] = {}
    for p in points:
        if p.values in seen:
            raise InputError(p.file, "MASS", f"same grid values {list(p.values)} as {seen[p.values]}")
        seen[p.values] = p.file
    return points
