"""The pyhf reference path: pyhf's numbers, plus diagnostics that catch stuck fits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recastfit.infer.reference import hypotest_batch
from recastfit.results import FitSettings, PatchTask
from tests.stau import reference, stau_grid, stau_patch


def test_reference_reproduces_pyhf_on_a_stau_point_with_diagnostics(stau_dir, xsec_dir):
    bkg = json.loads((stau_dir / "BkgOnly.json").read_text())
    m1, m2, y1, y2 = next(p for p in stau_grid(stau_dir, xsec_dir) if p[:2] == (280.0, 120.0))
    (res,) = hypotest_batch(
        bkg, [PatchTask("stau_280_120", (m1, m2), stau_patch(bkg, y1, y2))], FitSettings()
    )
    ref = reference(stau_dir)[(m1, m2)]
    assert res.ok and res.engine == "pyhf"
    assert res.cls_obs == pytest.approx(ref["obs"], abs=1e-6)
    assert np.allclose(res.cls_exp, ref["exp"], atol=1e-6)
    fits = res.diagnostics["fits"]
    assert set(fits) == {"free_data", "fixed_data", "fixed_bkg", "fixed_asimov"}
    assert all(f["converged"] for f in fits.values())
    assert fits["free_data"]["decrement"] < 2e-3 and "min_hessian_eigenvalue" in fits["free_data"]


def test_stuck_pyhf_fit_on_erjr_is_reported_failed(erjr_dir):
    """pyhf/SLSQP stops at mu_SIG = 1 here and returns CLs ~ 1 silently; the reference path must not."""
    bkg = json.loads((erjr_dir / "BkgOnly.json").read_text())
    patch = json.loads((erjr_dir / "patches" / "patch.ERJR_250p0_150p0.json").read_text())
    (res,) = hypotest_batch(bkg, [PatchTask("ERJR_250_150", (250.0, 150.0), patch)], FitSettings())
    assert res.status == "failed"
    assert res.cls_obs is None and res.cls_exp is None
    assert "not at a minimum" in res.reason and "free_data" in res.reason
    assert res.diagnostics["retries"] == 1
