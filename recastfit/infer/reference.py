"""Reference inference: one ``pyhf.infer.hypotest`` per point (numpy backend, scipy), checked.

Every fit pyhf made (free and fixed-POI fits to the data, the POI = 0 fit behind the Asimov
data, the fixed-POI fit to the Asimov data) is checked with the exact gradient and
Gauss-Newton curvature of the same likelihood (:mod:`recastfit.infer.likelihood` on
numpy; no JAX) and a finite-difference Hessian. A fit that fails the checks is redone from
better starting points; what still fails is reported as ``failed`` with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pyhf

from recastfit.infer.asymptotics import cls_from_q
from recastfit.infer.dense import build_dense, raw_dict, static_part
from recastfit.infer.diagnostics import failure_reason, fit_report, timed_out
from recastfit.infer.likelihood import bin_terms, constraint_widths, derive_cells, nll_terms, numpy_ops
from recastfit.results import FitSettings, HypotestResult, PatchTask

__all__ = ["hypotest_one", "hypotest_batch", "FitChecker"]

FIT_KEYS = {
    "free_data": "free_fit_to_data",
    "fixed_data": "fixed_poi_fit_to_data",
    "fixed_bkg": "asimov_pars",
    "fixed_asimov": "fixed_poi_fit_to_asimov",
}


class FitChecker:
    """Exact gradient / curvature of a patched workspace's twice-NLL, on numpy.

    ``spec`` is the merged (patched) workspace dict and ``model`` its pyhf model.
    """

    def __init__(self, spec: dict, model: pyhf.pdf.Model, hessian: bool = True):
        self.config = model.config
        self.ops = numpy_ops()
        self.dense = dm = build_dense(spec, model)
        self.codes = (dm.ns_code, dm.hs_code)
        st = static_part(dm.cells, dm.npars, dm.nbins, dm.ns_par)
        groups = [(derive_cells(raw_dict(dm.cells), *self.codes, self.ops, st["ns_row"]), st)]
        self.groups = groups
        self.sigma, self.tau = constraint_widths(groups, dm.sigma, self.ops)
        self.hessian = hessian

    def terms(self, theta, data):
        """(value, grad, Gauss-Newton curvature matrix) of twice-NLL at ``theta`` for pyhf ``data``."""
        dm = self.dense
        theta = np.asarray(theta, float)
        data = np.asarray(data, float)
        n = data[: dm.nbins]
        aux = self._aux(data[dm.nbins :])
        nu, jac = bin_terms(theta, self.groups, dm.nbins, dm.hs_par, self.codes, self.ops)
        value, grad, w, curv = nll_terms(
            theta,
            nu,
            jac,
            n,
            aux,
            self.sigma,
            self.tau,
            dm.gauss.astype(float),
            dm.pois.astype(float),
            self.ops,
        )
        gn = (jac.T * w) @ jac + np.diag(curv)
        return value, grad, gn

    def _aux(self, auxdata: np.ndarray) -> np.ndarray:
        """pyhf's auxdata vector (``auxdata_order``) spread onto the parameter vector."""
        aux = np.zeros(self.dense.npars)
        cfg = self.config
        pos = 0
        for name in cfg.auxdata_order:
            sl = cfg.par_slice(name)
            k = sl.stop - sl.start
            aux[sl] = auxdata[pos : pos + k]
            pos += k
        return aux

    def report(self, theta, data, free, theta0=None) -> dict:
        value, grad, gn = self.terms(theta, data)
        hess = self._fd_hessian(theta, data, free) if self.hessian else None
        dm = self.dense
        return fit_report(theta, grad, dm.lo, dm.hi, free, dm.par_names, value / 2.0, gn, hess, theta0)

    def _fd_hessian(self, theta, data, free) -> np.ndarray:
        theta = np.asarray(theta, float)
        npar = len(theta)
        hess = np.zeros((npar, npar))
        for i in np.flatnonzero(free):
            h = 1e-5 * max(1.0, abs(theta[i]))
            up, dn = theta.copy(), theta.copy()
            up[i] += h
            dn[i] -= h
            hess[i] = (self.terms(up, data)[1] - self.terms(dn, data)[1]) / (2 * h)
        return hess


def _checker(spec: dict, model) -> FitChecker | None:
    try:
        return FitChecker(spec, model)
    except Exception:  # noqa: BLE001 - an unsupported model is checked by the pyhf-only fallback
        return None


def _free_masks(model, mu_fixed: bool) -> np.ndarray:
    free = ~np.asarray(model.config.suggested_fixed(), bool)
    if mu_fixed:
        free[model.config.poi_index] = False
    return free


def _check_all(checker, model, data, pars: dict, asimov_data) -> dict:
    init = np.asarray(model.config.suggested_init(), float)
    out = {}
    for name, theta in pars.items():
        d = asimov_data if name == "fixed_asimov" else data
        free = _free_masks(model, name != "free_data")
        start = init if name == "free_data" else None
        out[name] = checker.report(theta, d, free, start)
    return out


def _refit(model, data, settings: FitSettings, start: np.ndarray):
    """qtilde/q asymptotics from pyhf fits started at ``start`` (POI reset per fit)."""
    from pyhf.infer import mle

    poi = model.config.poi_index
    bounds = model.config.suggested_bounds()
    fixed = model.config.suggested_fixed()
    mu = settings.mu_test
    s0 = start.copy()
    s0[poi] = 0.0
    bkg = mle.fixed_poi_fit(0.0, data, model, init_pars=s0.tolist(), par_bounds=bounds, fixed_params=fixed)
    asimov = model.expected_data(bkg)
    s_free = np.asarray(bkg, float).copy()
    s_free[poi] = max(bounds[poi][0], min(bounds[poi][1], 0.5 * mu))
    free, f_free = mle.fit(
        data, model, init_pars=s_free.tolist(), par_bounds=bounds, fixed_params=fixed, return_fitted_val=True
    )
    s_fix = np.asarray(free, float).copy()
    s_fix[poi] = mu
    fix, f_fix = mle.fixed_poi_fit(
        mu,
        data,
        model,
        init_pars=s_fix.tolist(),
        par_bounds=bounds,
        fixed_params=fixed,
        return_fitted_val=True,
    )
    s_a = np.asarray(bkg, float).copy()
    s_a[poi] = mu
    fix_a, f_fix_a = mle.fixed_poi_fit(
        mu,
        asimov,
        model,
        init_pars=s_a.tolist(),
        par_bounds=bounds,
        fixed_params=fixed,
        return_fitted_val=True,
    )
    f_free_a = float(pyhf.infer.mle.twice_nll(bkg, asimov, model))
    pars = {"free_data": free, "fixed_data": fix, "fixed_bkg": bkg, "fixed_asimov": fix_a}
    return pars, (float(f_free), float(f_fix), f_free_a, float(f_fix_a)), asimov


def hypotest_one(workspace: pyhf.Workspace, task: PatchTask, settings: FitSettings) -> HypotestResult:
    """CLs (observed + 5 expected) and best-fit POI for one patched workspace, with diagnostics."""
    t0 = time.perf_counter()
    model = workspace.model(patches=[task.patch])
    data = workspace.data(model)
    obs, exp, calc = pyhf.infer.hypotest(
        settings.mu_test,
        data,
        model,
        test_stat=settings.test_stat,
        calctype=settings.calctype,
        return_expected_set=True,
        return_calculator=True,
    )
    poi = model.config.poi_index
    fitted = calc.fitted_pars
    mu_hat = float(fitted.free_fit_to_data[poi])
    cls_obs, cls_exp = float(obs), [float(e) for e in exp]
    diagnostics: dict = {"retries": 0}
    reason = None
    if settings.calctype == "asymptotics":
        spec = _patched_spec(workspace, task.patch)
        checker = _checker(spec, model)
        pars = {k: np.asarray(getattr(fitted, v), float) for k, v in FIT_KEYS.items()}
        asimov = np.asarray(model.expected_data(pars["fixed_bkg"]), float)
        if checker is None:
            diagnostics["checks"] = "model not expressible densely: fits not checked"
        else:
            fits = _check_all(checker, model, data, pars, asimov)
            reason = failure_reason(fits)
            if reason is not None:
                retry = _retry(checker, model, data, settings, pars)
                diagnostics["retries"] = 1
                if retry is not None:
                    fits, (f_free, f_fix, f_free_a, f_fix_a), mu_hat = retry
                    q = max(f_fix - f_free, 0.0) if mu_hat <= settings.mu_test else 0.0
                    o, e = cls_from_q(
                        np.array([q]), np.array([max(f_fix_a - f_free_a, 0.0)]), settings.test_stat
                    )
                    cls_obs, cls_exp = float(o[0]), [float(v) for v in e[0]]
                    reason = None
                else:
                    reason = "pyhf fits did not converge, also after a retry: " + reason
            diagnostics.update(_summary(fits))
    return HypotestResult(
        name=task.name,
        values=list(task.values),
        status="ok" if reason is None else "failed",
        cls_obs=cls_obs,
        cls_exp=cls_exp,
        mu_hat=mu_hat,
        reason=reason,
        wall_time=time.perf_counter() - t0,
        engine="pyhf",
        diagnostics=diagnostics,
    )


def _patched_spec(workspace: pyhf.Workspace, patch: list[dict]) -> dict:
    import jsonpatch

    return jsonpatch.apply_patch(dict(workspace), patch)


def _retry(checker, model, data, settings: FitSettings, pars: dict):
    """Refit from the POI = 0 fit and from the suggested init; the first fully converged wins."""
    init = np.asarray(model.config.suggested_init(), float)
    for start in (np.asarray(pars["fixed_bkg"], float), init):
        try:
            new, values, asimov = _refit(model, data, settings, start.copy())
        except Exception:  # noqa: BLE001 - a failed pyhf fit is a failed retry, reported below
            continue
        fits = _check_all(checker, model, data, {k: np.asarray(v, float) for k, v in new.items()}, asimov)
        if failure_reason(fits) is None:
            return fits, values, float(new["free_data"][model.config.poi_index])
    return None


def _summary(fits: dict) -> dict:
    return {
        "grad_norm": max(f["grad_norm"] for f in fits.values()),
        "at_bounds": fits["free_data"]["at_bounds"],
        "nll": fits["free_data"]["nll"],
        "fits": fits,
    }


_WORKSPACES: dict[int, tuple[dict, pyhf.Workspace]] = {}


def _workspace(bkg_spec: dict) -> pyhf.Workspace:
    """The validated workspace of ``bkg_spec``, built once per spec object (workers keep theirs)."""
    hit = _WORKSPACES.get(id(bkg_spec))
    if hit is None or hit[0] is not bkg_spec:
        if len(_WORKSPACES) >= 4:
            _WORKSPACES.clear()
        hit = _WORKSPACES[id(bkg_spec)] = (bkg_spec, pyhf.Workspace(bkg_spec))
    return hit[1]


def hypotest_batch(
    bkg_spec: dict,
    tasks: Sequence[PatchTask],
    settings: FitSettings,
    *,
    progress: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
) -> list[HypotestResult]:
    """Run :func:`hypotest_one` for each task against one background workspace.

    ``progress(done, total)`` is called after each point; no point is started after
    ``deadline`` (:func:`time.monotonic`): those are ``failed`` with reason ``"timeout"``.
    """
    pyhf.set_backend("numpy", "scipy")
    workspace = _workspace(bkg_spec)
    out = []
    for task in tasks:
        if deadline is not None and time.monotonic() >= deadline:
            out.append(timed_out(task, "pyhf"))
        else:
            out.append(hypotest_one(workspace, task, settings))
        if progress is not None:
            progress(len(out), len(tasks))
    return out
