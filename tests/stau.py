"""The ATLAS stau grid from ``../shared`` built by hand, independently of recastfit.

Yield = sigma(m_stau) x 139000 pb^-1 x efficiency, floored at 1e-6; a sample ``signal``
with ``mu_SIG`` (normfactor) and ``lumi`` added as the first sample of each SR, exactly as
the shared ``reference_pyhf.json`` was made.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

LUMI_PB = 139000.0
SR_CHANNELS = {"SRlow": "SR1cut_cuts", "SRhigh": "SR2cut_cuts"}
_ENTRY = re.compile(r"\[\[\[([\d.E+-]+)\*GeV,([\d.E+-]+)\*GeV\],\[[^\]]*\]\],([\d.eE+-]+)\]")


def read_effmap(path: Path) -> dict[tuple[float, float], float]:
    return {(float(a), float(b)): float(e) for a, b, e in _ENTRY.findall(path.read_text())}


def stau_xsec(xsec_file: Path):
    data = json.loads(xsec_file.read_text())["data"]
    masses = np.array(sorted(float(k) for k in data))
    logs = np.log([data[str(int(m))]["xsec_pb"] for m in masses])
    return lambda m: float(np.exp(np.interp(m, masses, logs)))


def stau_grid(stau_dir: Path, xsec_dir: Path) -> list[tuple[float, float, float, float]]:
    """(m_stau, m_LSP, yield SR1cut_cuts, yield SR2cut_cuts) for the 59 points of both maps."""
    lo = read_effmap(stau_dir / "SRlow" / "TStauStau.txt")
    hi = read_effmap(stau_dir / "SRhigh" / "TStauStau.txt")
    xs = stau_xsec(xsec_dir / "pp13_stau_LR_NLO+NLL_PDF4LHC.json")

    def y(m1: float, eff: float) -> float:
        return max(xs(m1) * LUMI_PB * eff, 1e-6)

    return [(m1, m2, y(m1, lo[(m1, m2)]), y(m1, hi[(m1, m2)])) for m1, m2 in sorted(set(lo) & set(hi))]


def stau_patch(bkg: dict, y1: float, y2: float) -> list[dict]:
    index = {c["name"]: i for i, c in enumerate(bkg["channels"])}
    mods = [
        {"name": "mu_SIG", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "lumi", "data": None},
    ]
    return [
        {
            "op": "add",
            "path": f"/channels/{index[ch]}/samples/0",
            "value": {"name": "signal", "data": [float(y)], "modifiers": mods},
        }
        for ch, y in (("SR1cut_cuts", y1), ("SR2cut_cuts", y2))
    ]


def reference(stau_dir: Path) -> dict[tuple[float, float], dict]:
    """The shared README's pyhf reference values keyed by (m_stau, m_LSP)."""
    points = json.loads((stau_dir / "reference_pyhf.json").read_text())["points"]
    return {tuple(p["m"]): p for p in points}
