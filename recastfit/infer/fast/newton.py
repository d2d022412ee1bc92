"""Bounded Gauss-Newton / Levenberg-Marquardt minimiser with a low-rank (Woodbury) solve.

The curvature is ``diag(d) + Jw^T Jw`` with ``Jw = sqrt(w) J`` of shape [B, P] and B (data
bins) small: constrained parameters are eliminated with the Woodbury identity through a
B x B matrix, unconstrained ones (normfactor, shapefactor) through a small Schur complement,
so a step costs about one gradient evaluation. Written for one point; callers ``vmap`` it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["FitOut", "make_minimizer", "lowrank_solve"]

LAM0 = 1e-3
LAM_MIN = 1e-9
LAM_MAX = 1e10
TINY = 1e-12


class FitOut(NamedTuple):
    theta: jax.Array
    value: jax.Array
    grad: jax.Array  # gradient at theta
    pgrad_norm: jax.Array  # norm of the projected gradient (free parameters, bounds respected)
    decrement: jax.Array  # Gauss-Newton decrement g^T A^-1 g at the optimum
    iterations: jax.Array
    converged: jax.Array


def lowrank_solve(jw, curv, grad, free, lam, cidx, uidx):
    """Step ``x`` solving ``(diag(d) + Jw^T Jw) x = -g`` on the free parameters (others: 0)."""
    jwf = jw * free[None, :]
    g = grad * free
    diag_j = jnp.sum(jwf * jwf, axis=0)
    d = curv * (1.0 + lam) + lam * diag_j + TINY * (1.0 + diag_j)
    d = jnp.where(free > 0, d, 1.0)
    jc, dc, rc = jwf[:, cidx], d[cidx], -g[cidx]
    nb = jw.shape[0]
    cap = jnp.eye(nb) + (jc / dc[None, :]) @ jc.T
    chol = jnp.linalg.cholesky(cap)

    def cinv(v):
        return jax.scipy.linalg.cho_solve((chol, True), v)

    x = jnp.zeros_like(grad)
    if uidx.shape[0]:
        ju, du, ru = jwf[:, uidx], d[uidx], -g[uidx]
        cinv_ju = cinv(ju)
        schur = jnp.diag(du) + ju.T @ cinv_ju
        rhs = ru - ju.T @ cinv(jc @ (rc / dc))
        xu = jnp.linalg.solve(schur, rhs)
        rc = rc - jc.T @ (ju @ xu)
        x = x.at[uidx].set(xu)
    xc = (rc - jc.T @ cinv(jc @ (rc / dc))) / dc
    return x.at[cidx].set(xc)


def exact_step(hess, grad, free, lam):
    """Damped Newton step with the exact Hessian on the free block (NaN where not PD)."""
    fr = free > 0
    m = jnp.outer(fr, fr)
    h = jnp.where(m, hess, 0.0)
    h = h + jnp.diag(jnp.where(fr, lam * (jnp.abs(jnp.diag(hess)) + 1e-8), 1.0))
    chol = jnp.linalg.cholesky(h)
    return jax.scipy.linalg.cho_solve((chol, True), -grad * free)


def make_minimizer(
    evaluate: Callable,
    lo,
    hi,
    cidx,
    uidx,
    max_iter: int = 100,
    tol: float = 1e-8,
    accept: float = 1e-4,
    exact: bool = False,
) -> Callable:
    """Return ``minimize(theta0, free, args) -> FitOut``.

    ``evaluate(theta, args) -> (value, grad, jac, w, curv)``; ``free`` is a 0/1 float mask.
    With ``exact`` the step uses the autodiff Hessian (Gauss-Newton where it is not positive
    definite): costly, meant for the few fits that Gauss-Newton does not finish.
    Iterations stop when the Gauss-Newton decrement falls below ``tol`` (twice-NLL units); the
    fit counts as converged when the decrement at the end is below ``accept``.
    """

    def active_free(theta, grad, free):
        at_lo = (theta <= lo) & (grad > 0)
        at_hi = (theta >= hi) & (grad < 0)
        return free * (~(at_lo | at_hi))

    def minimize(theta0, free, args):
        theta0 = jnp.clip(theta0, lo, hi)
        value0, grad0, jac0, w0, curv0 = evaluate(theta0, args)

        def step(state):
            it, theta, value, grad, jac, w, curv, lam, dec, _ = state
            fr = active_free(theta, grad, free)
            jw = jnp.sqrt(w)[:, None] * jac
            x = lowrank_solve(jw, curv, grad, fr, lam, cidx, uidx)
            if exact:
                hess = jax.hessian(lambda t: evaluate(t, args)[0])(theta)
                xe = exact_step(hess, grad, fr, lam)
                x = jnp.where(jnp.all(jnp.isfinite(xe)) & (jnp.dot(grad, xe) < 0), xe, x)
            trial = jnp.clip(theta + x, lo, hi)
            tv, tg, tj, tw, tc = evaluate(trial, args)
            ok = jnp.isfinite(tv) & jnp.all(jnp.isfinite(tg)) & (tv <= value)
            dec_new = -jnp.dot(grad, x)
            pick = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
            lam_new = jnp.clip(jnp.where(ok, lam * 0.1, lam * 10.0), LAM_MIN, LAM_MAX)
            finished = (dec_new < tol) & (lam <= 1e-2)
            return (
                it + 1,
                pick(trial, theta),
                pick(tv, value),
                pick(tg, grad),
                pick(tj, jac),
                pick(tw, w),
                pick(tc, curv),
                lam_new,
                dec_new,
                finished,
            )

        def cond(state):
            it, *_, lam, _, finished = state
            return (it < max_iter) & ~finished & (lam < LAM_MAX)

        init = (0, theta0, value0, grad0, jac0, w0, curv0, jnp.asarray(LAM0), jnp.asarray(jnp.inf), False)
        it, theta, value, grad, jac, w, curv, lam, _, _ = jax.lax.while_loop(cond, step, init)
        fr = active_free(theta, grad, free)
        jw = jnp.sqrt(w)[:, None] * jac
        x = lowrank_solve(jw, curv, grad, fr, 0.0, cidx, uidx)
        dec = -jnp.dot(grad, x)
        pg = jnp.linalg.norm(grad * fr)
        converged = jnp.isfinite(value) & (dec < accept)
        return FitOut(theta, value, grad, pg, dec, it, converged)

    return minimize
