"""Shared convergence checks: bounds, decrement, stuck fits, indefinite Hessians."""

from __future__ import annotations

import numpy as np

from recastfit.infer.diagnostics import (
    DECREMENT_TOL,
    at_bounds,
    decrement,
    failure_reason,
    fit_report,
    min_eigenvalue,
    projected_free,
)

NAMES = ["mu", "a", "b"]
LO, HI = np.array([0.0, -5.0, -5.0]), np.array([10.0, 5.0, 5.0])
FREE = np.array([True, True, True])


def test_at_bounds_lists_free_parameters_on_a_bound():
    theta = np.array([0.0, 5.0, 1.0])
    assert at_bounds(theta, LO, HI, FREE, NAMES) == ["mu", "a"]
    assert at_bounds(theta, LO, HI, np.array([False, True, True]), NAMES) == ["a"]


def test_projected_free_releases_a_bound_when_the_gradient_points_inward():
    theta = np.array([0.0, 1.0, 1.0])
    assert projected_free(theta, np.array([+3.0, 0.1, 0.1]), LO, HI, FREE).tolist() == [False, True, True]
    assert projected_free(theta, np.array([-3.0, 0.1, 0.1]), LO, HI, FREE).tolist() == [True, True, True]


def test_decrement_and_min_eigenvalue():
    hess = np.diag([2.0, 4.0, 8.0])
    grad = np.array([2.0, 4.0, 0.0])
    assert decrement(grad, hess, np.ones(3, bool)) == 2.0 + 4.0
    assert decrement(grad, hess, np.array([False, True, False])) == 4.0
    assert min_eigenvalue(np.array([[1.0, 2.0], [2.0, 1.0]]), np.ones(2, bool)) == -1.0


def test_converged_fit_passes():
    theta = np.array([1.2, 0.3, -0.1])
    rep = fit_report(theta, np.full(3, 1e-6), LO, HI, FREE, NAMES, 10.0, np.eye(3), np.eye(3))
    assert rep["converged"] and "reason" not in rep
    assert rep["decrement"] < DECREMENT_TOL and rep["at_bounds"] == []


def test_stuck_fit_is_flagged():
    theta0 = np.array([1.0, 0.0, 0.0])
    grad = np.array([-40.0, 5.0, 0.0])  # mu wants to move a lot, the fit returned its start
    rep = fit_report(theta0, grad, LO, HI, FREE, NAMES, 10.0, np.eye(3), theta0=theta0.copy())
    assert not rep["converged"]
    assert "stuck at the starting point" in rep["reason"] and "not at a minimum" in rep["reason"]


def test_saddle_point_is_flagged_by_the_hessian():
    theta = np.array([1.0, 0.0, 0.0])
    hess = np.diag([1.0, -2.0, 1.0])
    rep = fit_report(theta, np.zeros(3), LO, HI, FREE, NAMES, 10.0, np.eye(3), hess)
    assert not rep["converged"] and "not positive definite" in rep["reason"]
    assert rep["min_hessian_eigenvalue"] == -2.0


def test_failure_reason_names_each_failed_fit():
    fits = {"free": {"converged": True}, "fixed": {"converged": False, "grad_norm": 3.0, "iterations": 7}}
    msg = failure_reason(fits)
    assert msg.startswith("fit 'fixed'") and "3" in msg and "7 iterations" in msg
    assert failure_reason({"free": {"converged": True}}) is None
