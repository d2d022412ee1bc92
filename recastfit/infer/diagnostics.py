"""Convergence checks shared by the pyhf reference path and the fast engine.

A fit is trusted when its Gauss-Newton decrement ``g^T H^-1 g`` (the twice-NLL decrease a
Newton step would still give) is small; a fit that stopped where the gradient is large
(e.g. pyhf/SLSQP returning its starting point) is *stuck*. Free parameters sitting on a
bound are listed, and the projected Hessian may be checked for positive definiteness.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recastfit.results import HypotestResult, PatchTask

__all__ = [
    "DECREMENT_TOL",
    "at_bounds",
    "projected_free",
    "decrement",
    "min_eigenvalue",
    "fit_report",
    "failure_reason",
    "timed_out",
]

DECREMENT_TOL = 2e-3  # twice-NLL units: a converged fit cannot improve by more than 1e-3 in NLL
BOUND_RTOL = 1e-6  # optimisers (SLSQP) stop a little inside a bound


def at_bounds(theta, lo, hi, free, names: Sequence[str]) -> list[str]:
    """Names of free parameters that sit on (within ``BOUND_RTOL`` of the range) a bound."""
    theta, lo, hi = (np.asarray(a, float) for a in (theta, lo, hi))
    span = np.maximum(hi - lo, 1e-300)
    on = (np.abs(theta - lo) <= BOUND_RTOL * span) | (np.abs(theta - hi) <= BOUND_RTOL * span)
    return [names[i] for i in np.flatnonzero(on & np.asarray(free, bool))]


def projected_free(theta, grad, lo, hi, free) -> np.ndarray:
    """Free parameters not held by a bound (a bound holds one when the gradient pushes outward)."""
    theta, grad = np.asarray(theta, float), np.asarray(grad, float)
    tol = BOUND_RTOL * np.maximum(np.asarray(hi, float) - np.asarray(lo, float), 1e-300)
    held = ((theta <= lo + tol) & (grad > 0)) | ((theta >= hi - tol) & (grad < 0))
    return np.asarray(free, bool) & ~held


def decrement(grad, hess, mask) -> float:
    """``g^T H^-1 g`` on the masked block (inf when that block is singular)."""
    g = np.asarray(grad, float)[mask]
    if not g.size:
        return 0.0
    h = np.asarray(hess, float)[np.ix_(mask, mask)]
    try:
        return float(g @ np.linalg.solve(h, g))
    except np.linalg.LinAlgError:
        return float("inf")


def min_eigenvalue(hess, mask) -> float:
    """Smallest eigenvalue of the masked, symmetrised Hessian block."""
    h = np.asarray(hess, float)[np.ix_(mask, mask)]
    if not h.size:
        return float("inf")
    return float(np.linalg.eigvalsh(0.5 * (h + h.T))[0])


def fit_report(
    theta,
    grad,
    lo,
    hi,
    free,
    names: Sequence[str],
    nll: float,
    curvature=None,
    hessian=None,
    theta0=None,
    iterations: int | None = None,
) -> dict:
    """Diagnostics of one fit (twice-NLL gradient/curvature); ``converged`` and ``reason`` decide.

    ``curvature`` is a positive-definite approximation (Gauss-Newton) used for the decrement;
    ``hessian`` the exact one, checked for positive definiteness on the unheld free block.
    """
    mask = projected_free(theta, grad, lo, hi, free)
    g = np.asarray(grad, float)
    rep: dict = {
        "nll": float(nll),
        "grad_norm": float(np.linalg.norm(g[mask])),
        "at_bounds": at_bounds(theta, lo, hi, free, names),
    }
    if iterations is not None:
        rep["iterations"] = int(iterations)
    reasons = []
    if not np.isfinite(nll) or not np.all(np.isfinite(g)):
        reasons.append("non-finite NLL or gradient")
    if curvature is not None:
        rep["decrement"] = decrement(g, curvature, mask)
        if not rep["decrement"] <= DECREMENT_TOL:
            reasons.append(f"not at a minimum (Newton decrement {rep['decrement']:.3g})")
    if hessian is not None:
        rep["min_hessian_eigenvalue"] = min_eigenvalue(hessian, mask)
        scale = max(1.0, float(np.max(np.abs(np.diag(np.asarray(hessian)))))) if mask.any() else 1.0
        if rep["min_hessian_eigenvalue"] < -1e-6 * scale:
            reasons.append(
                f"Hessian not positive definite (min eigenvalue {rep['min_hessian_eigenvalue']:.3g})"
            )
    if theta0 is not None and np.allclose(theta, theta0, rtol=0, atol=1e-12) and rep["grad_norm"] > 1e-2:
        reasons.append(f"stuck at the starting point (gradient norm {rep['grad_norm']:.3g})")
    rep["converged"] = not reasons
    if reasons:
        rep["reason"] = "; ".join(reasons)
    return rep


def failure_reason(fits: dict) -> str | None:
    """One message naming every fit in ``fits`` (name -> report) that did not converge."""
    bad = []
    for name, rep in fits.items():
        if rep.get("converged", True):
            continue
        detail = rep.get("reason") or (
            f"not converged (gradient norm {rep.get('grad_norm', float('nan')):.3g}"
            + (f", decrement {rep['decrement']:.3g}" if "decrement" in rep else "")
            + (f", {rep['iterations']} iterations" if "iterations" in rep else "")
            + ")"
        )
        bad.append(f"fit '{name}': {detail}")
    return "; ".join(bad) if bad else None


def timed_out(task: PatchTask, engine: str) -> HypotestResult:
    """The ``failed`` result of a point not finished before its deadline (reason ``"timeout"``).

    >>> timed_out(PatchTask("p", (1.0,), []), "fast").reason
    'timeout'
    """
    return HypotestResult(
        task.name, list(task.values), "failed", reason="timeout", engine=engine, diagnostics={"timeout": True}
    )
