"""Reference inference: one ``pyhf.infer.hypotest`` per point (numpy backend, scipy)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pyhf

from recastfit.results import FitSettings, HypotestResult, PatchTask

__all__ = ["hypotest_one", "hypotest_batch"]


def hypotest_one(
    workspace: pyhf.Workspace, task: PatchTask, settings: FitSettings
) -> HypotestResult:
    """CLs (observed + 5 expected) and best-fit POI for one patched workspace."""
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
    mu_hat = float(calc.fitted_pars.free_fit_to_data[poi])
    return HypotestResult(
        name=task.name,
        values=list(task.values),
        status="ok",
        cls_obs=float(obs),
        cls_exp=[float(e) for e in exp],
        mu_hat=mu_hat,
        wall_time=time.perf_counter() - t0,
        engine="pyhf",
    )


def hypotest_batch(
    bkg_spec: dict, tasks: Sequence[PatchTask], settings: FitSettings
) -> list[HypotestResult]:
    """Run :func:`hypotest_one` for each task against one background workspace."""
    pyhf.set_backend("numpy", "scipy")
    workspace = pyhf.Workspace(bkg_spec)
    return [hypotest_one(workspace, task, settings) for task in tasks]
