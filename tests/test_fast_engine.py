"""The fast engine against pyhf: likelihood values, hypothesis tests, real pallets."""

from __future__ import annotations

import glob
import json
import subprocess
import sys

import jsonpatch
import numpy as np
import pyhf
import pytest

from recastfit.results import FitSettings, PatchTask
from tests.stau import reference, stau_grid, stau_patch

pytest.importorskip("jax")

FAST = FitSettings(engine="fast")


def synthetic_bkg() -> dict:
    """Two channels, several bins, every modifier type pyhf has, a fixed parameter."""
    sr = {
        "name": "SR",
        "samples": [
            {
                "name": "bkgA",
                "data": [20.0, 12.0, 5.0],
                "modifiers": [
                    {"name": "mu_A", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "staterror_SR", "type": "staterror", "data": [1.0, 1.5, 0.8]},
                    {"name": "jes", "type": "normsys", "data": {"hi": 1.08, "lo": 0.9}},
                    {
                        "name": "jes",
                        "type": "histosys",
                        "data": {"hi_data": [21.0, 12.5, 5.6], "lo_data": [19.2, 11.0, 4.7]},
                    },
                    {"name": "big", "type": "normsys", "data": {"hi": 1.9, "lo": 0.3}},
                ],
            },
            {
                "name": "bkgB",
                "data": [8.0, 6.0, 3.0],
                "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "staterror_SR", "type": "staterror", "data": [0.9, 0.6, 0.7]},
                    {"name": "shape_B", "type": "shapesys", "data": [1.2, 0.9, 0.0]},
                    {"name": "xs_B", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}},
                ],
            },
        ],
    }
    cr = {
        "name": "CR",
        "samples": [
            {
                "name": "bkgA",
                "data": [200.0, 150.0],
                "modifiers": [
                    {"name": "mu_A", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None},
                    {"name": "sf_CR", "type": "shapefactor", "data": None},
                    {
                        "name": "jes",
                        "type": "histosys",
                        "data": {"hi_data": [210.0, 151.0], "lo_data": [192.0, 148.0]},
                    },
                ],
            },
            {
                "name": "bkgB",
                "data": [30.0, 20.0],
                "modifiers": [
                    {"name": "fixed_sys", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
                ],
            },
        ],
    }
    return {
        "channels": [sr, cr],
        "observations": [{"name": "SR", "data": [31.0, 17.0, 9.0]}, {"name": "CR", "data": [236.0, 168.0]}],
        "measurements": [
            {
                "name": "m",
                "config": {
                    "poi": "mu_SIG",
                    "parameters": [
                        {
                            "name": "lumi",
                            "auxdata": [1.0],
                            "sigmas": [0.02],
                            "bounds": [[0.9, 1.1]],
                            "inits": [1.0],
                        },
                        {"name": "fixed_sys", "fixed": True},
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }


def signal_patch(scale: float, stat: str = "staterror") -> list[dict]:
    y_sr, y_cr = [4.0 * scale, 6.0 * scale, 5.0 * scale], [0.5 * scale, 0.2 * scale]
    mods = [
        {"name": "mu_SIG", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": "sig_xs", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
        {
            "name": "jes",
            "type": "histosys",
            "data": {"hi_data": [v * 1.05 for v in y_sr], "lo_data": [v * 0.97 for v in y_sr]},
        },
    ]
    if stat == "staterror":
        mods.append({"name": "staterror_SR", "type": "staterror", "data": [0.1 * v for v in y_sr]})
    else:
        mods.append({"name": f"sig_stat_{scale}", "type": "shapesys", "data": [0.1 * v for v in y_sr]})
    return [
        {
            "op": "add",
            "path": "/channels/0/samples/0",
            "value": {"name": f"sig_{scale}", "data": y_sr, "modifiers": mods},
        },
        {
            "op": "add",
            "path": "/channels/1/samples/0",
            "value": {
                "name": f"sig_{scale}",
                "data": y_cr,
                "modifiers": [{"name": "mu_SIG", "type": "normfactor", "data": None}],
            },
        },
    ]


@pytest.mark.parametrize("stat", ["staterror", "shapesys"])
def test_numpy_likelihood_matches_pyhf_logpdf(stat):
    from recastfit.infer.reference import FitChecker

    bkg = synthetic_bkg()
    patch = signal_patch(1.3, stat)
    ws = pyhf.Workspace(bkg)
    model = ws.model(patches=[patch])
    data = np.asarray(ws.data(model))
    checker = FitChecker(jsonpatch.apply_patch(bkg, patch), model)
    rng = np.random.default_rng(7)
    init = np.asarray(model.config.suggested_init())
    for scale in (0.3, 1.2):  # 1.2 puts some alphas beyond |alpha| = 1 (exponential / linear branches)
        theta = np.clip(
            init
            + rng.normal(0, scale, len(init)) * (init != 0) * 0.2
            + rng.normal(0, scale, len(init)) * (init == 0),
            [b[0] for b in model.config.suggested_bounds()],
            [b[1] for b in model.config.suggested_bounds()],
        )
        theta = np.where(theta <= 1e-9, 0.5, theta)
        value, grad, _ = checker.terms(theta, data)
        assert value / -2.0 == pytest.approx(float(model.logpdf(theta, data)[0]), abs=1e-8)
        for i in range(len(theta)):  # gradient against central differences of pyhf's logpdf
            h = 1e-6
            up, dn = theta.copy(), theta.copy()
            up[i] += h
            dn[i] -= h
            fd = -2.0 * (model.logpdf(up, data)[0] - model.logpdf(dn, data)[0]) / (2 * h)
            assert grad[i] == pytest.approx(fd, rel=1e-4, abs=1e-4), model.config.par_names[i]


def test_synthetic_hypotests_match_pyhf():
    from recastfit.infer.fast import hypotest_batch

    bkg = synthetic_bkg()
    tasks = [
        PatchTask(f"p{i}_{stat}", (s, 0.0), signal_patch(s, stat))
        for i, (s, stat) in enumerate(
            [(0.2, "staterror"), (0.8, "staterror"), (2.0, "staterror"), (0.5, "shapesys"), (1.5, "shapesys")]
        )
    ]
    results = hypotest_batch(bkg, tasks, FAST)
    ws = pyhf.Workspace(bkg)
    pyhf.set_backend("numpy", "scipy")
    for task, res in zip(tasks, results, strict=True):
        model = ws.model(patches=[task.patch])
        obs, exp = pyhf.infer.hypotest(
            1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
        )
        assert res.ok and res.engine == "fast", res.reason
        assert res.cls_obs == pytest.approx(float(obs), abs=1e-3)
        assert np.allclose(res.cls_exp, [float(e) for e in exp], atol=1e-3)
        assert res.diagnostics["fits"]["free_data"]["converged"]


def test_stau_grid_matches_pyhf_reference(stau_dir, xsec_dir):
    from recastfit.infer.fast import hypotest_batch
    from recastfit.infer.fast.batch import _RUNNERS, clear_cache

    clear_cache()
    bkg = json.loads((stau_dir / "BkgOnly.json").read_text())
    grid = stau_grid(stau_dir, xsec_dir)
    ref = reference(stau_dir)
    tasks = [PatchTask(f"stau_{m1:g}_{m2:g}", (m1, m2), stau_patch(bkg, y1, y2)) for m1, m2, y1, y2 in grid]
    results = hypotest_batch(bkg, tasks, FAST)
    assert len(results) == 59
    for (m1, m2, *_), res in zip(grid, results, strict=True):
        r = ref[(m1, m2)]
        assert res.ok and res.engine == "fast", (m1, m2, res.reason)
        assert abs(res.cls_obs - r["obs"]) < 1e-3, (m1, m2)
        assert np.max(np.abs(np.asarray(res.cls_exp) - r["exp"])) < 1e-3, (m1, m2)
    # one compiled structure; 60 points reuse the padded shape of 59 (no recompilation)
    (runner,) = _RUNNERS.values()
    compiled = [f._cache_size() for f in runner._points.values()]
    hypotest_batch(bkg, tasks + tasks[:1], FAST)
    assert [f._cache_size() for f in runner._points.values()] == compiled


def test_demo_grid_matches_pyhf():
    demo = pytest.importorskip("recastfit.demo")
    patches = pytest.importorskip("recastfit.patches")
    from recastfit.infer.fast import hypotest_batch

    bkg = demo.background_workspace()
    spec = patches.build_patchset(bkg, demo.demo_points(), parameters=demo.PARAMETERS)
    tasks = patches.patchset_tasks(spec)
    results = hypotest_batch(bkg, tasks, FAST)
    ws = pyhf.Workspace(bkg)
    # pyhf's default SLSQP tolerance leaves up to 1.3e-3 of CLs error on weak demo points (demo_800_700);
    # with a tight tolerance pyhf and the fast engine agree to 1e-8
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    assert len(results) == 54 and all(r.ok for r in results)
    # pyhf on every 5th point (11 of 54, light to compressed; weak demo_800_700 included) keeps it cheap
    sample = [i for i in range(len(tasks)) if i % 5 == 0 or tasks[i].name == "demo_800_700"]
    for task, res in ((tasks[i], results[i]) for i in sample):
        model = ws.model(patches=[task.patch])
        obs, exp = pyhf.infer.hypotest(
            1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
        )
        assert res.ok, (task.name, res.reason)
        assert abs(res.cls_obs - float(obs)) < 1e-3, task.name
        assert np.max(np.abs(np.asarray(res.cls_exp) - np.asarray(exp, float))) < 1e-3, task.name
    pyhf.set_backend("numpy", "scipy")


def _multistart_nll(checker, model, data, starts) -> float:
    """Best twice-NLL/2 of L-BFGS-B free fits (exact numpy gradient) from several starts."""
    from scipy.optimize import minimize

    bounds = list(model.config.suggested_bounds())
    fixed = np.asarray(model.config.suggested_fixed())
    init = np.asarray(model.config.suggested_init())
    bounds = [(init[i], init[i]) if fixed[i] else b for i, b in enumerate(bounds)]
    best = np.inf
    for s in starts:
        res = minimize(
            lambda t: checker.terms(t, data)[:2],
            np.clip(s, *np.asarray(bounds).T),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-9},
        )
        best = min(best, res.fun / 2.0)
    return best


@pytest.mark.slow
def test_erjr_pallet_no_stuck_fits(erjr_dir):
    """Real patches (every 3rd of the 66): fitted to a true minimum or flagged failed, never stuck at mu=1."""
    from recastfit.infer.fast import hypotest_batch
    from recastfit.infer.reference import FitChecker

    bkg = json.loads((erjr_dir / "BkgOnly.json").read_text())
    files = sorted(glob.glob(str(erjr_dir / "patches" / "*.json")))
    assert len(files) == 66
    files = files[::3]  # 22 patches across the pallet: the hard ones are spread through it
    tasks = [PatchTask(f.split("/")[-1], (0.0, 0.0), json.loads(open(f).read())) for f in files]
    results = hypotest_batch(bkg, tasks, FAST)
    for res in results:
        if not res.ok:
            assert res.reason and res.cls_obs is None
            continue
        fit = res.diagnostics["fits"]["free_data"]
        stuck = abs(res.mu_hat - 1.0) < 1e-9 and fit.get("decrement", 0.0) > 2e-3
        assert not stuck, res.name
        assert fit["converged"] and fit.get("decrement", 0.0) < 2e-3, res.name
    # the free-fit NLL is a true minimum: multi-start L-BFGS-B on a subset (affordable on 2 cores)
    ws = pyhf.Workspace(bkg)
    rng = np.random.default_rng(3)
    for k in (0, 9, 21):
        res, task = results[k], tasks[k]
        if not res.ok:
            continue
        model = ws.model(patches=[task.patch])
        data = np.asarray(ws.data(model))
        checker = FitChecker(jsonpatch.apply_patch(bkg, task.patch), model)
        init = np.asarray(model.config.suggested_init())
        starts = [init] + [init + rng.normal(0, 0.3, len(init)) * (init == 0) for _ in range(2)]
        best = _multistart_nll(checker, model, data, starts)
        assert res.diagnostics["fits"]["free_data"]["nll"] <= best + 1e-3, task.name


def test_import_recastfit_does_not_import_jax():
    code = "import sys, recastfit, recastfit.infer, recastfit.infer.fast; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
