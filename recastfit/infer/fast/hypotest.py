"""Batched qtilde/q asymptotic hypothesis tests for all patches of one structure (JAX).

Per point three fits run (free fit and fixed-POI fit to the data, fixed-POI fit to the
Asimov data); the fixed POI = 0 fit that makes the Asimov data is shared by the whole batch
when the patch numbers cannot change it. The free fit to the Asimov data needs no fit: its
minimum is the parameter point that generated the data (saturated likelihood).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from recastfit.infer.dense import chunk_size, raw_dict, static_part
from recastfit.infer.fast.jaxsetup import configure
from recastfit.infer.fast.newton import make_minimizer
from recastfit.infer.fast.structure import Structure
from recastfit.infer.likelihood import (
    bin_terms,
    constraint_widths,
    derive_cells,
    jac_layout,
    jax_ops,
    nll_terms,
    numpy_ops,
)

__all__ = ["Runner", "PointFits", "FIT_NAMES", "STARTS"]

configure()

FIT_NAMES = ("free_data", "fixed_data", "fixed_asimov")
# strategies tried in order: 0 = Gauss-Newton from warm starts (ordinary points finish here);
# then Newton-CG, one fit per row, for the fits still unconverged: 1 = from where Gauss-Newton
# stopped, 2 = from the warm starts, 3, 4 = from other starts
STARTS = 5
# iteration budget per strategy, in units of max_iter: the Gauss-Newton pass is short (20
# iterations: where fits need more, Gauss-Newton converges only linearly and a few Newton-CG
# steps from where it stopped are cheaper; 10 left most 300x-signal fits far from the minimum)
# so that slow points do not hold up a whole batch (all points iterate until the slowest
# stops); the stragglers are redone one fit per row, compacted into small batches
RETRY_BUDGET = (2 / 3, 3, 3, 3, 3)


@dataclass
class PointFits:
    """Numpy results of one pass over a batch (arrays with a leading point axis)."""

    value: np.ndarray  # [N, 3]
    theta: np.ndarray  # [N, 3, P]
    pgrad: np.ndarray  # [N, 3]
    decrement: np.ndarray  # [N, 3]
    iterations: np.ndarray  # [N, 3]
    converged: np.ndarray  # [N, 3]
    asimov_free: np.ndarray  # [N]


class Runner:
    """Jitted batch functions of one :class:`Structure` for one ``mu_test``.

    Every model array goes into the compiled functions as an argument, not as a constant:
    constants would be folded into the program (slow to compile, large to cache).
    """

    def __init__(self, structure: Structure, mu_test: float = 1.0, max_iter: int = 30):
        self.structure = structure
        dm = structure.dense
        self.dense = dm
        self.mu_test = float(mu_test)
        npar, nbins = dm.npars, dm.nbins
        cells = dm.cells
        stat_raw = cells.select(structure.static_cells)
        var_raw = cells.select(structure.var_cells)
        self._codes = codes = (dm.ns_code, dm.hs_code)
        static = []
        if len(structure.static_cells):
            st = static_part(stat_raw, npar, nbins, dm.ns_par)
            static.append((derive_cells(raw_dict(stat_raw), *codes, numpy_ops(), st["ns_row"]), st))
        has_var = bool(len(structure.var_cells))
        constrained = dm.gauss | dm.pois
        free = ~dm.fixed
        free_cond = free.copy()
        free_cond[dm.poi] = False
        arrays = {
            "static": static,
            "var_static": static_part(var_raw, npar, nbins, dm.ns_par, all_rows=True) if has_var else None,
            "var_base": raw_dict(var_raw),
            "slots": {k: (p, lf) for k, (p, lf) in structure.slots.items()},
            "obs_slots": tuple(structure.obs_slots),
            "cidx": np.flatnonzero(constrained),
            "uidx": np.flatnonzero(~constrained),
            "free": free.astype(float),
            "free_cond": free_cond.astype(float),
        }
        for name in ("sigma", "obs", "aux", "init", "lo", "hi", "ns_par", "hs_par"):
            arrays[name] = np.asarray(getattr(dm, name))
        statics = [st for _, st in static] + ([arrays["var_static"]] if has_var else [])
        arrays["layout"] = jac_layout(statics, npar, nbins, dm.hs_par)
        mult = np.zeros(npar + 1)
        mult[np.unique(cells.mult)] = 1.0
        arrays["mult"] = mult[:npar] * (dm.lo >= 0)
        arrays["gauss"] = dm.gauss.astype(float)
        arrays["pois"] = dm.pois.astype(float)
        self._arrays = jax.tree_util.tree_map(jnp.asarray, arrays)
        self.shared = structure.bkg_shareable
        self.chunk = chunk_size(dm.nbins, npar, len(cells.nom), len(dm.ns_par) + len(dm.hs_par))
        self._max_iter = max_iter
        # the strategy is data, not a static argument: one compiled program per batch size serves all
        # jitted, and exported to / loaded from the compilation cache folder (see export_cache)
        from recastfit.infer.fast.export_cache import Programs

        programs = Programs(self)
        self._bkg = programs.jit("bkg", jax.vmap(self._bkg_fit, in_axes=(None, 0, None)))
        # (program names are the export-cache keys and the `compiled` kinds batch.py looks up)
        self._points = {
            False: programs.jit("points-False", jax.vmap(self._point_fits, in_axes=(None, 0, 0, None))),
            True: programs.jit("points-True", jax.vmap(self._retry_fit, in_axes=(None, 0, 0, None))),
        }
        self.compiled: set[tuple[str, int]] = set()  # (function, batch size) already compiled

    # -- likelihood of one point ------------------------------------------------------------
    def _prepare(self, arr, leaves):
        ops = jax_ops()
        groups = list(arr["static"])
        if arr["var_static"] is not None:
            raw = {}
            for key, base in arr["var_base"].items():
                pos, leaf = arr["slots"].get(key, (None, None))
                if pos is not None and pos.shape[0]:
                    base = base.reshape(-1).at[pos].set(leaves[leaf]).reshape(base.shape)
                raw[key] = base
            groups.append(
                (derive_cells(raw, *self._codes, ops, arr["var_static"]["ns_row"]), arr["var_static"])
            )
        sigma, tau = constraint_widths(groups, arr["sigma"], ops)
        obs = arr["obs"]
        pos, leaf = arr["obs_slots"]
        if pos.shape[0]:
            obs = obs.at[pos].set(leaves[leaf])
        aux = jnp.where(arr["pois"] > 0, tau, arr["aux"])
        return groups, sigma, tau, obs, aux

    def _evaluator(self, arr, groups, sigma, tau):
        ops = jax_ops()
        nbins = self.dense.nbins

        def rates(theta):
            return bin_terms(theta, groups, nbins, arr["hs_par"], self._codes, ops, arr["layout"])

        def evaluate(theta, data):
            n, aux = data
            nu, jac = rates(theta)
            value, grad, w, curv = nll_terms(
                theta, nu, jac, n, aux, sigma, tau, arr["gauss"], arr["pois"], ops
            )
            return value, grad, jac, w, curv

        return rates, evaluate

    def _minimizer(self, arr, evaluate, start, newton: bool = True):
        budget = jnp.asarray(jnp.asarray(RETRY_BUDGET)[start] * self._max_iter, int)
        return make_minimizer(
            evaluate,
            arr["lo"],
            arr["hi"],
            arr["cidx"],
            arr["uidx"],
            arr["mult"],
            max_iter=budget,
            newton=newton,
        )

    def _bkg_fit(self, arr, leaves, start: int):
        groups, sigma, tau, obs, aux = self._prepare(arr, leaves)
        _, evaluate = self._evaluator(arr, groups, sigma, tau)
        minimize = self._minimizer(arr, evaluate, start)
        init = arr["init"]
        theta0 = jnp.stack([init, 0.5 * (init + arr["lo"]), 0.5 * (init + arr["hi"])])[jnp.minimum(start, 2)]
        theta0 = jnp.where(arr["free_cond"] > 0, theta0, init).at[self.dense.poi].set(0.0)
        return minimize(theta0, arr["free_cond"], (obs, aux))

    def _setup(self, arr, leaves, theta_bkg, start, newton: bool):
        """Minimiser, starting points [3, P], masks, main and aux data [3, ...] of one point."""
        poi, mu = self.dense.poi, self.mu_test
        groups, sigma, tau, obs, aux = self._prepare(arr, leaves)
        rates, evaluate = self._evaluator(arr, groups, sigma, tau)
        minimize = self._minimizer(arr, evaluate, start, newton)
        init = arr["init"]
        pois = arr["pois"] > 0
        starts_set = jnp.maximum(start - 2, 0)  # strategies 0 and 2 share the warm starts
        # Asimov data from the mu=0 fit: main data = expected rates, aux = expected aux
        n_a, _ = rates(theta_bkg)
        aux_a = jnp.where(pois, theta_bkg * tau, theta_bkg)
        aux_a = jnp.where((arr["gauss"] > 0) | pois, aux_a, aux)
        asimov_free = evaluate(theta_bkg, (n_a, aux_a))[0]
        # start 0: the mu=0 fit for all three (most scanned points are excluded); 1: the
        # suggested init; 2: between the two (the free fit from the mu=0 fit with mu = 0)
        mid = 0.5 * (theta_bkg + init)
        base = jnp.stack(
            [
                jnp.stack([theta_bkg, theta_bkg, theta_bkg]),
                jnp.stack([init, init, init]),
                jnp.stack([theta_bkg, mid, mid]),
            ]
        )[starts_set]
        s_free = base[0].at[poi].set(jnp.where(starts_set == 2, 0.0, init[poi]))
        starts = jnp.stack([s_free, base[1].at[poi].set(mu), base[2].at[poi].set(mu)])
        masks = jnp.stack([arr["free"], arr["free_cond"], arr["free_cond"]])
        main = jnp.stack([obs, obs, n_a])
        auxs = jnp.stack([aux, aux, aux_a])
        return minimize, starts, masks, main, auxs, asimov_free

    def _point_fits(self, arr, leaves, theta_bkg, start):
        """The three Gauss-Newton fits of one point (``theta_bkg`` [P]: the mu=0 fit)."""
        minimize, starts, masks, main, auxs, asimov_free = self._setup(arr, leaves, theta_bkg, start, False)
        # one minimiser, vmapped over the three fits (one compiled loop instead of three)
        out = jax.vmap(lambda t0, fr, n, ax: minimize(t0, fr, (n, ax)))(starts, masks, main, auxs)
        return _fields(out, asimov_free)

    def _retry_fit(self, arr, leaves, row, start):
        """One Newton-CG fit (a retry). ``row``: ``bkg`` [P] (the mu=0 fit), ``fit`` (index into
        :data:`FIT_NAMES`) and ``theta0`` [P], the start of strategy 1 (where the previous pass left
        this fit; strategies 2-4 start from their own points)."""
        f = row["fit"]
        minimize, starts, masks, main, auxs, asimov_free = self._setup(arr, leaves, row["bkg"], start, True)
        warm = row["theta0"]
        warm = warm.at[self.dense.poi].set(jnp.where(f == 0, warm[self.dense.poi], self.mu_test))
        theta0 = jnp.where(start == 1, warm, starts[f])
        return _fields(minimize(theta0, masks[f], (main[f], auxs[f])), asimov_free)

    # -- batch API ---------------------------------------------------------------------------
    def bkg_fit(self, leaves: np.ndarray, start: int = 0):
        """The fixed POI = 0 fit for each row of ``leaves`` ([N, L]); returns numpy FitOut fields."""
        self.compiled.add(("bkg", len(leaves)))
        out = self._bkg(self._arrays, jnp.asarray(leaves), start)
        return jax.tree_util.tree_map(np.asarray, out)

    def point_fits(self, leaves: np.ndarray, theta_bkg: np.ndarray) -> PointFits:
        """Three Gauss-Newton fits (strategy 0) per row of ``leaves`` ([N, L]) given the mu=0 fits
        ``theta_bkg`` ([N, P])."""
        self.compiled.add(("points-False", len(leaves)))
        out = self._points[False](self._arrays, jnp.asarray(leaves), jnp.asarray(theta_bkg), 0)
        return PointFits(*(np.asarray(o) for o in out))

    def retry_fits(
        self, leaves: np.ndarray, theta_bkg: np.ndarray, fit: np.ndarray, theta0: np.ndarray, start: int
    ) -> PointFits:
        """One Newton-CG fit per row (strategy ``start`` >= 1): fit ``fit[i]`` (index into
        :data:`FIT_NAMES`) of the point ``leaves[i]``; strategy 1 starts at ``theta0[i]``.

        Fields of the result have no fit axis ([N], theta [N, P]).
        """
        if start < 1:
            raise ValueError(f"retry strategies start at 1, got {start}")
        self.compiled.add(("points-True", len(leaves)))
        rows = {
            "bkg": jnp.asarray(theta_bkg),
            "fit": jnp.asarray(fit, dtype=jnp.int32),
            "theta0": jnp.asarray(theta0),
        }
        out = self._points[True](self._arrays, jnp.asarray(leaves), rows, start)
        return PointFits(*(np.asarray(o) for o in out))


def _fields(out, asimov_free) -> tuple:
    """The fields of :class:`PointFits`, in order, from a minimiser's output."""
    return (out.value, out.theta, out.pgrad_norm, out.decrement, out.iterations, out.converged, asimov_free)
