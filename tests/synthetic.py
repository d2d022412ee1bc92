"""A synthetic published-likelihood-size HistFactory workspace and signal patches for it.

44 one-bin channels, 5 background samples each (220 samples), 100 normsys, 75 histosys,
44 staterror (one per channel), 40 shapesys, 6 normfactors (5 background normalisations and
the POI ``mu_SIG``, added with the signal) and ``lumi``: 265 parameters in the background, 267
with a signal (``mu_SIG`` and a cross-section normsys), the size of the published
44-bin / 268-parameter likelihood on which large signals once hung the fast engine.
Deterministic for a given seed; the observations are Poisson draws of the nominal.

>>> ws = workspace()
>>> len(ws["channels"]), sum(len(c["samples"]) for c in ws["channels"])
(44, 220)
>>> from recastfit.infer.dense import spec_size
>>> spec_size(ws)
(44, 265, 220, 175)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["workspace", "signal_patch", "signal_yields", "NCHANNELS"]

NCHANNELS = 44
NSAMPLES = 5
N_NORMSYS = 100
N_HISTOSYS = 75
N_SHAPESYS = 40


def workspace(seed: int = 0, nchannels: int = NCHANNELS) -> dict:
    """The background-only workspace (a pyhf spec dict)."""
    rng = np.random.default_rng(seed)
    nominal = np.exp(rng.uniform(np.log(0.5), np.log(200.0), size=(nchannels, NSAMPLES)))
    mods: list[list[list[dict]]] = [[[] for _ in range(NSAMPLES)] for _ in range(nchannels)]
    for c in range(nchannels):
        for s in range(NSAMPLES):
            mods[c][s] += [
                {"name": f"mu_bkg{s}", "type": "normfactor", "data": None},
                {"name": "lumi", "type": "lumi", "data": None},
                {
                    "name": f"staterror_ch{c}",
                    "type": "staterror",
                    "data": [float(nominal[c, s] * rng.uniform(0.03, 0.2))],
                },
            ]
    cells = [(c, s) for c in range(nchannels) for s in range(NSAMPLES)]
    for k in range(N_NORMSYS):
        for i in rng.choice(len(cells), size=int(rng.integers(2, 9)), replace=False):
            c, s = cells[i]
            up = float(rng.uniform(1.02, 1.3))
            dn = float(rng.uniform(0.75, 0.98)) if rng.random() < 0.8 else float(rng.uniform(1.0, 1.1))
            mods[c][s].append({"name": f"ns{k}", "type": "normsys", "data": {"hi": up, "lo": dn}})
    for k in range(N_HISTOSYS):
        for i in rng.choice(len(cells), size=int(rng.integers(2, 7)), replace=False):
            c, s = cells[i]
            nom = nominal[c, s]
            hi = nom * float(rng.uniform(1.02, 1.25))
            lo = nom * float(rng.uniform(0.8, 0.99))
            mods[c][s].append(
                {"name": f"hs{k}", "type": "histosys", "data": {"hi_data": [hi], "lo_data": [lo]}}
            )
    for k, c in enumerate(rng.choice(nchannels, size=min(N_SHAPESYS, nchannels), replace=False)):
        s = int(rng.integers(NSAMPLES))
        mods[c][s].append(
            {
                "name": f"shapesys{k}",
                "type": "shapesys",
                "data": [float(nominal[c, s] * rng.uniform(0.1, 0.4))],
            }
        )
    channels, observations = [], []
    for c in range(nchannels):
        samples = [
            {"name": f"bkg{s}", "data": [float(nominal[c, s])], "modifiers": mods[c][s]}
            for s in range(NSAMPLES)
        ]
        channels.append({"name": f"ch{c}", "samples": samples})
        observations.append({"name": f"ch{c}", "data": [float(rng.poisson(nominal[c].sum()))]})
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [
            {
                "name": "meas",
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
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }


def signal_yields(
    n: int, total: tuple[float, float] = (60.0, 6000.0), nchannels: int = NCHANNELS, seed: int = 1
):
    """``n`` signals [n, nchannels]: totals log-uniform in ``total``, spread unevenly over channels.

    ``total=(60, 6000)`` gives the 300x "hard points"; ``(0.2, 20)`` ordinary ones.
    """
    rng = np.random.default_rng(seed)
    totals = np.exp(rng.uniform(np.log(total[0]), np.log(total[1]), size=n))
    weights = rng.dirichlet(np.full(nchannels, 0.3), size=n)
    return np.maximum(totals[:, None] * weights, 1e-6)


def signal_patch(yields: Sequence[float]) -> list[dict]:
    """A patch adding a ``signal`` sample (``mu_SIG``, ``lumi``, a cross-section normsys) to each channel."""
    mods = [
        {"name": "mu_SIG", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": "sig_xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
    ]
    return [
        {
            "op": "add",
            "path": f"/channels/{c}/samples/0",
            "value": {"name": "signal", "data": [float(y)], "modifiers": mods},
        }
        for c, y in enumerate(yields)
    ]
