"""The demo analysis's background-only workspace (pyhf JSON, schema 1.0.0).

A 4-bin signal region (``SRA``), a one-bin compressed signal region (``SRB``) and a ttbar
control region (``CR``), with normfactor, normsys, histosys, staterror and lumi modifiers and
fixed observed data.

>>> ws = background_workspace()
>>> [c["name"] for c in ws["channels"]], ws["measurements"][0]["config"]["poi"]
(['CR', 'SRA', 'SRB'], 'mu_SIG')
"""

from __future__ import annotations

__all__ = ["background_workspace", "LUMI_FB"]

#: integrated luminosity of the demo analysis (1/fb)
LUMI_FB = 139.0

# background expectations per channel
_TTBAR = {"SRA": [12.0, 7.0, 3.5, 1.5], "SRB": [9.0], "CR": [420.0]}
_WJETS = {"SRA": [6.0, 3.0, 1.2, 0.5], "SRB": [14.0], "CR": [60.0]}
_OTHER = {"SRA": [2.0, 1.2, 0.6, 0.3], "SRB": [3.0], "CR": [25.0]}
# observed counts: fixed, close to the background expectation (a mild excess in SRB)
_DATA = {"SRA": [20, 12, 4, 2], "SRB": [29], "CR": [503]}


def _scale(values: list[float], factor: float) -> list[float]:
    return [round(v * factor, 6) for v in values]


def _channel(name: str) -> dict:
    tt, wj, ot = _TTBAR[name], _WJETS[name], _OTHER[name]
    jes_shape = [1.0 + 0.04 * (i - (len(tt) - 1) / 2) for i in range(len(tt))]
    ttbar_mods = [
        {"name": "mu_ttbar", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "lumi", "data": None},
        {
            "name": "jes",
            "type": "histosys",
            "data": {
                "hi_data": [round(v * s * 1.05, 6) for v, s in zip(tt, jes_shape, strict=True)],
                "lo_data": [round(v / s * 0.95, 6) for v, s in zip(tt, jes_shape, strict=True)],
            },
        },
        {"name": f"staterror_{name}", "type": "staterror", "data": _scale(tt, 0.04)},
    ]
    wjets_mods = [
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": "xsec_wjets", "type": "normsys", "data": {"hi": 1.15, "lo": 0.87}},
        {"name": "jes", "type": "normsys", "data": {"hi": 1.06, "lo": 0.95}},
        {"name": f"staterror_{name}", "type": "staterror", "data": _scale(wj, 0.06)},
    ]
    other_mods = [
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": "xsec_other", "type": "normsys", "data": {"hi": 1.2, "lo": 0.8}},
    ]
    return {
        "name": name,
        "samples": [
            {"name": "ttbar", "data": list(tt), "modifiers": ttbar_mods},
            {"name": "wjets", "data": list(wj), "modifiers": wjets_mods},
            {"name": "other", "data": list(ot), "modifiers": other_mods},
        ],
    }


def background_workspace() -> dict:
    """The demo's background-only workspace (pyhf JSON, schema 1.0.0)."""
    channels = ["CR", "SRA", "SRB"]
    return {
        "channels": [_channel(c) for c in channels],
        "observations": [{"name": c, "data": [float(v) for v in _DATA[c]]} for c in channels],
        "measurements": [
            {
                "name": "demo",
                "config": {
                    "poi": "mu_SIG",
                    "parameters": [
                        {
                            "name": "lumi",
                            "auxdata": [1.0],
                            "sigmas": [0.017],
                            "bounds": [[0.915, 1.085]],
                            "inits": [1.0],
                        },
                        {"name": "mu_ttbar", "bounds": [[0.0, 5.0]], "inits": [1.0]},
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }
