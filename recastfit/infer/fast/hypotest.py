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

from recastfit.infer.dense import raw_dict, static_part
from recastfit.infer.fast.jaxsetup import configure
from recastfit.infer.fast.newton import make_minimizer
from recastfit.infer.fast.structure import Structure
from recastfit.infer.likelihood import (
    bin_terms,
    constraint_widths,
    derive_cells,
    jax_ops,
    nll_terms,
    numpy_ops,
)

__all__ = ["Runner", "PointFits", "FIT_NAMES", "STARTS"]

configure()

FIT_NAMES = ("free_data", "fixed_data", "fixed_asimov")
STARTS = 3  # start-point strategies tried in order (0 = warm starts; 1, 2 = retries)
# iteration budget per strategy, in units of max_iter: the first pass is short so that a few slow
# points do not hold up a whole batch (all points iterate until the slowest stops); the few
# stragglers are redone in small batches with a long budget, and last with exact Newton steps
RETRY_BUDGET = (1, 10, 5)  # the last strategy takes exact (autodiff) Newton steps


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
    """Jitted batch functions of one :class:`Structure` for one ``mu_test``."""

    def __init__(self, structure: Structure, mu_test: float = 1.0, max_iter: int = 40):
        self.structure = structure
        dm = structure.dense
        self.dense = dm
        self.mu_test = float(mu_test)
        npar, nbins = dm.npars, dm.nbins
        cells = dm.cells
        stat_raw = cells.select(structure.static_cells)
        var_raw = cells.select(structure.var_cells)
        codes = (dm.ns_code, dm.hs_code)
        self._codes = codes
        np_ops = numpy_ops()
        self._static = []
        if len(structure.static_cells):
            self._static.append(
                (derive_cells(raw_dict(stat_raw), *codes, np_ops), static_part(stat_raw, npar, nbins))
            )
        self._var_static = static_part(var_raw, npar, nbins) if len(structure.var_cells) else None
        self._var_base = raw_dict(var_raw)
        constrained = dm.gauss | dm.pois
        self._cidx = jnp.asarray(np.flatnonzero(constrained))
        self._uidx = jnp.asarray(np.flatnonzero(~constrained))
        self._arrays = {
            "static": jax.tree_util.tree_map(jnp.asarray, self._static),
            "var_static": None
            if self._var_static is None
            else jax.tree_util.tree_map(jnp.asarray, self._var_static),
            "var_base": jax.tree_util.tree_map(jnp.asarray, self._var_base),
            "slots": {k: (jnp.asarray(p), jnp.asarray(lf)) for k, (p, lf) in structure.slots.items()},
            "obs_slots": tuple(jnp.asarray(a) for a in structure.obs_slots),
        }
        self.shared = structure.bkg_shareable
        self._max_iter = max_iter
        free = ~dm.fixed
        self._free = jnp.asarray(free, float)
        free_cond = free.copy()
        free_cond[dm.poi] = False
        self._free_cond = jnp.asarray(free_cond, float)
        self._bkg = jax.jit(jax.vmap(self._bkg_fit, in_axes=(0, None)), static_argnums=1)
        self._points = jax.jit(jax.vmap(self._point_fits, in_axes=(0, 0, None)), static_argnums=2)

    # -- likelihood of one point ------------------------------------------------------------
    def _prepare(self, leaves):
        ops = jax_ops()
        dm, arr = self.dense, self._arrays
        groups = list(arr["static"])
        if arr["var_static"] is not None:
            raw = {}
            for key, base in arr["var_base"].items():
                pos, leaf = arr["slots"].get(key, (None, None))
                if pos is not None and pos.shape[0]:
                    base = base.reshape(-1).at[pos].set(leaves[leaf]).reshape(base.shape)
                raw[key] = base
            groups.append((derive_cells(raw, *self._codes, ops), arr["var_static"]))
        sigma, tau = constraint_widths(groups, jnp.asarray(dm.sigma), ops)
        obs = jnp.asarray(dm.obs)
        pos, leaf = arr["obs_slots"]
        if pos.shape[0]:
            obs = obs.at[pos].set(leaves[leaf])
        aux = jnp.where(jnp.asarray(dm.pois), tau, jnp.asarray(dm.aux))
        return groups, sigma, tau, obs, aux

    def _evaluator(self, groups, sigma, tau):
        ops = jax_ops()
        dm = self.dense
        gauss, pois = jnp.asarray(dm.gauss, float), jnp.asarray(dm.pois, float)
        ns_par, hs_par = jnp.asarray(dm.ns_par), jnp.asarray(dm.hs_par)

        def rates(theta):
            return bin_terms(theta, groups, ns_par, hs_par, self._codes, ops)

        def evaluate(theta, data):
            n, aux = data
            nu, jac = rates(theta)
            value, grad, w, curv = nll_terms(theta, nu, jac, n, aux, sigma, tau, gauss, pois, ops)
            return value, grad, jac, w, curv

        return rates, evaluate

    def _minimizer(self, evaluate, start: int):
        dm = self.dense
        return make_minimizer(
            evaluate,
            jnp.asarray(dm.lo),
            jnp.asarray(dm.hi),
            self._cidx,
            self._uidx,
            max_iter=self._max_iter * RETRY_BUDGET[start],
            exact=start == STARTS - 1,
        )

    def _bkg_fit(self, leaves, start: int):
        groups, sigma, tau, obs, aux = self._prepare(leaves)
        _, evaluate = self._evaluator(groups, sigma, tau)
        minimize = self._minimizer(evaluate, start)
        theta0 = jnp.asarray(self.dense.init).at[self.dense.poi].set(0.0)
        return minimize(theta0, self._free_cond, (obs, aux))

    def _point_fits(self, leaves, theta_bkg, start: int):
        dm = self.dense
        poi, mu = dm.poi, self.mu_test
        groups, sigma, tau, obs, aux = self._prepare(leaves)
        rates, evaluate = self._evaluator(groups, sigma, tau)
        minimize = self._minimizer(evaluate, start)
        init = jnp.asarray(dm.init)
        pois = jnp.asarray(dm.pois)
        # Asimov data from the mu=0 fit: main data = expected rates, aux = expected aux
        n_a, _ = rates(theta_bkg)
        aux_a = jnp.where(pois, theta_bkg * tau, theta_bkg)
        aux_a = jnp.where(jnp.asarray(dm.gauss) | pois, aux_a, aux)
        asimov_free = evaluate(theta_bkg, (n_a, aux_a))[0]
        if start == 0:
            s_free = theta_bkg.at[poi].set(init[poi])
        elif start == 1:
            s_free = init
        else:
            s_free = theta_bkg
        free = minimize(s_free, self._free, (obs, aux))
        s_fix = {0: free.theta, 1: theta_bkg, 2: init}[start].at[poi].set(mu)
        fixed = minimize(s_fix, self._free_cond, (obs, aux))
        s_asi = {0: theta_bkg, 1: init, 2: fixed.theta}[start].at[poi].set(mu)
        fixed_a = minimize(s_asi, self._free_cond, (n_a, aux_a))
        stack = lambda *xs: jnp.stack(xs)  # noqa: E731
        fits = (free, fixed, fixed_a)
        return (
            stack(*(f.value for f in fits)),
            stack(*(f.theta for f in fits)),
            stack(*(f.pgrad_norm for f in fits)),
            stack(*(f.decrement for f in fits)),
            stack(*(f.iterations for f in fits)),
            stack(*(f.converged for f in fits)),
            asimov_free,
        )

    # -- batch API ---------------------------------------------------------------------------
    def bkg_fit(self, leaves: np.ndarray, start: int = 0):
        """The fixed POI = 0 fit for each row of ``leaves`` ([N, L]); returns numpy FitOut fields."""
        out = self._bkg(jnp.asarray(leaves), start)
        return jax.tree_util.tree_map(np.asarray, out)

    def point_fits(self, leaves: np.ndarray, theta_bkg: np.ndarray, start: int = 0) -> PointFits:
        """Three fits per row of ``leaves`` ([N, L]) given the mu=0 fits ``theta_bkg`` ([N, P])."""
        out = self._points(jnp.asarray(leaves), jnp.asarray(theta_bkg), start)
        return PointFits(*(np.asarray(o) for o in out))
