"""Bounded trust-region Newton-CG minimiser, preconditioned by a low-rank Gauss-Newton solve.

Why not plain Gauss-Newton: the Fisher (Gauss-Newton) curvature ``J^T diag(2/nu) J`` equals
the Hessian only where the model matches the data. For fixed-POI fits with large signals
(expected counts 100x the observed ones) the Hessian differs from it by factors 0.3-2 in many
directions, so Gauss-Newton steps overshoot or undershoot, Levenberg-Marquardt damping takes
over and fits crawl for hundreds of iterations. Here each step solves ``(H + lam D) x = -g``
with the exact Hessian ``H`` applied matrix-free (Hessian-vector products by forward-mode
differentiation of the hand-written gradient, one linearisation per step) by preconditioned
conjugate gradients. The preconditioner is the Gauss-Newton matrix ``diag(d) + Jw^T Jw``
(``Jw = sqrt(w) J`` of shape [B, P], B data bins small), solved with the Woodbury identity
through a B x B Cholesky factor (unconstrained parameters through a small Schur complement),
so where Gauss-Newton is already right CG stops after one iteration. Negative curvature ends
CG early (the Gauss-Newton step is used if it comes first). No dense P x P matrix is formed.

Written for one point; callers ``vmap`` it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["FitOut", "make_minimizer", "lowrank_factor"]

LAM0 = 1e-3
LAM_MIN = 1e-9
LAM_MAX = 1e10
TINY = 1e-12
CG_RTOL = 0.1
DEBUG = False
SHRINK = 8.0
SHRINK_MIN = 1e-3
LS_MAX = 5  # backtracking steps (factor LS_SHRINK each) before a step is rejected
LS_SHRINK = 0.25  # inexact Newton: relative preconditioned residual at which CG stops


class FitOut(NamedTuple):
    theta: jax.Array
    value: jax.Array
    grad: jax.Array  # gradient at theta
    pgrad_norm: jax.Array  # norm of the projected gradient (free parameters, bounds respected)
    decrement: jax.Array  # Gauss-Newton decrement g^T A^-1 g at the optimum
    iterations: jax.Array
    converged: jax.Array


def lowrank_factor(jw, curv, free, lam, cidx, uidx):
    """Return ``(solve, dscale)``: ``solve(r)`` = ``(D_lam + Jw^T Jw)^-1 r`` on the free parameters.

    ``D_lam = curv (1 + lam) + lam diag(Jw^T Jw)``; ``dscale = curv + diag(Jw^T Jw)`` is the
    Levenberg-Marquardt scaling (the damping added to the Hessian is ``lam * dscale``).
    """
    jwf = jw * free[None, :]
    diag_j = jnp.sum(jwf * jwf, axis=0)
    dscale = curv + diag_j
    d = curv * (1.0 + lam) + lam * diag_j + TINY * (1.0 + diag_j)
    d = jnp.where(free > 0, d, 1.0)
    jc, dc = jwf[:, cidx], d[cidx]
    nb = jw.shape[0]
    chol = jnp.linalg.cholesky(jnp.eye(nb) + (jc / dc[None, :]) @ jc.T)

    def cinv(v):
        return jax.scipy.linalg.cho_solve((chol, True), v)

    if uidx.shape[0]:
        ju, du = jwf[:, uidx], d[uidx]
        schur = jnp.diag(du) + ju.T @ cinv(ju)
        lu = jax.scipy.linalg.lu_factor(schur)

    def solve(r):
        r = r * free
        x = jnp.zeros_like(r)
        rc = r[cidx]
        if uidx.shape[0]:
            ru = r[uidx]
            rhs = ru - ju.T @ cinv(jc @ (rc / dc))
            xu = jax.scipy.linalg.lu_solve(lu, rhs)
            rc = rc - jc.T @ (ju @ xu)
            x = x.at[uidx].set(xu)
        xc = (rc - jc.T @ cinv(jc @ (rc / dc))) / dc
        return x.at[cidx].set(xc) * free

    return solve, dscale


def _pcg(apply_a, solve_m, b, max_iter: int):
    """Preconditioned CG for ``A x = b`` from 0; stops at negative curvature or small residual.

    Returns ``(x, xAx)``; if the first direction already has non-positive curvature, ``x`` is
    the preconditioned right-hand side (the Gauss-Newton step).
    """
    z = solve_m(b)
    rz0 = jnp.dot(b, z)

    def cond(s):
        k, _, _, _, _, rz, _, stop = s
        return (k < max_iter) & ~stop & (rz > (CG_RTOL**2) * rz0)

    def body(s):
        k, x, xax, r, p, rz, _, _ = s
        ap = apply_a(p)
        pap = jnp.dot(p, ap)
        neg = ~(pap > 0)
        alpha = jnp.where(neg, 0.0, rz / jnp.where(neg, 1.0, pap))
        # x A x for x + alpha p (A symmetric): xAx + 2 alpha p.A x + alpha^2 pAp, with A x = b - r
        xax_new = xax + 2.0 * alpha * jnp.dot(p, b - r) + alpha**2 * pap
        x_new = x + alpha * p
        r_new = r - alpha * ap
        z_new = solve_m(r_new)
        rz_new = jnp.dot(r_new, z_new)
        beta = rz_new / jnp.where(rz > 0, rz, 1.0)
        first_neg = neg & (k == 0)
        x_new = jnp.where(first_neg, z, x_new)
        xax_new = jnp.where(first_neg, jnp.nan, xax_new)
        return (k + 1, x_new, xax_new, r_new, z_new + beta * p, rz_new, neg, neg)

    init = (0, jnp.zeros_like(b), jnp.asarray(0.0), b, z, rz0, False, rz0 <= 0)
    k, x, xax, _, _, _, neg, _ = jax.lax.while_loop(cond, body, init)
    x = jnp.where(rz0 > 0, x, z)
    return x, xax, k, neg


def make_minimizer(
    evaluate: Callable,
    lo,
    hi,
    cidx,
    uidx,
    mult,
    max_iter=100,
    tol: float = 1e-8,
    accept: float = 1e-4,
    cg_iter: int = 12,
    newton: bool = True,
) -> Callable:
    """Return ``minimize(theta0, free, args) -> FitOut``.

    ``evaluate(theta, args) -> (value, grad, jac, w, curv)`` (twice-NLL, its gradient, the
    Jacobian of the expected main data, Gauss-Newton bin weights, diagonal constraint
    curvature); ``free`` is a 0/1 float mask; ``mult`` marks multiplicative parameters
    (normfactor, lumi, staterror, shapesys, shapefactor with lower bound >= 0). Iterations stop
    when the Newton decrement falls
    below ``tol`` (twice-NLL units); the fit counts as converged when the Gauss-Newton
    decrement at the end is below ``accept``. ``max_iter`` may be a traced integer. With
    ``newton=False`` the steps are plain (damped) Gauss-Newton: no Hessian-vector products,
    cheapest where the model is close to the data (ordinary points).
    """

    def active_free(theta, grad, free):
        at_lo = (theta <= lo) & (grad > 0)
        at_hi = (theta >= hi) & (grad < 0)
        return free * (~(at_lo | at_hi))

    def minimize(theta0, free, args):
        theta0 = jnp.clip(theta0, lo, hi)
        value0, grad0, jac0, w0, curv0 = evaluate(theta0, args)

        def grad_fn(t):
            return evaluate(t, args)[1]

        def step(state):
            it, theta, value, grad, jac, w, curv, lam, dec, _ = state
            fr = active_free(theta, grad, free)
            jw = jnp.sqrt(w)[:, None] * jac
            solve_m, dscale = lowrank_factor(jw, curv, fr, lam, cidx, uidx)
            _, hvp = jax.linearize(grad_fn, theta)

            def apply_a(v):
                v = v * fr
                return (hvp(v) + lam * dscale * v) * fr

            if newton:
                x, xax, cg_k, cg_neg = _pcg(apply_a, solve_m, -grad * fr, cg_iter)
            else:
                x, xax, cg_k, cg_neg = solve_m(-grad * fr), jnp.nan, 0, False
            # multiplicative factors shrink at most 8x per step (unless already small): a step
            # that overshoots to ~0 would leave a -n log(factor) term that Newton only doubles away
            floor = jnp.where((mult > 0) & (theta > SHRINK_MIN), jnp.maximum(lo, theta / SHRINK), lo)

            def point(t):
                return jnp.clip(theta + t * x, floor, hi)

            def acceptable(v):
                return jnp.isfinite(v) & (v <= value)

            def ls_cond(c):
                return (c[1] < LS_MAX) & ~acceptable(c[2][0])

            def ls_body(c):
                t, k, _ = c
                return LS_SHRINK * t, k + 1, evaluate(point(LS_SHRINK * t), args)

            # backtracking along the Newton-CG step: a step into a region where the model is
            # undefined (negative rates) or uphill is shortened here instead of re-solved
            t, n_ls, (tv, tg, tj, tw, tc) = jax.lax.while_loop(
                ls_cond, ls_body, (jnp.asarray(1.0), 0, evaluate(point(1.0), args))
            )
            trial = point(t)
            gx = jnp.dot(grad, x)
            # quadratic-model reduction of the (backtracked) step, from the CG quantities
            pred = -(t * gx + 0.5 * t * t * jnp.where(jnp.isfinite(xax), xax, -gx))
            ok = jnp.isfinite(tv) & jnp.all(jnp.isfinite(tg)) & (tv <= value)
            rho = (value - tv) / jnp.where(pred > 0, pred, jnp.inf)
            good = ok & (n_ls == 0)
            lam_new = jnp.where(good & (rho > 0.5), lam * 0.1, jnp.where(good & (rho > 0.1), lam, lam * 10.0))
            pick = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
            lam_new = jnp.clip(lam_new, LAM_MIN, LAM_MAX)
            dec_new = -jnp.dot(grad, x)
            if DEBUG:
                jax.debug.print(
                    "it {} v {:.6f} tv {:.6f} lam {:.1e} rho {:.3f} dec {:.2e} cg {} {} ls {}",
                    *(it, value, tv, lam, rho, dec_new, cg_k, cg_neg, n_ls),
                )
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
        solve_m, _ = lowrank_factor(jw, curv, fr, 0.0, cidx, uidx)
        dec = jnp.dot(grad, solve_m(grad))
        pg = jnp.linalg.norm(grad * fr)
        converged = jnp.isfinite(value) & (dec < accept)
        return FitOut(theta, value, grad, pg, dec, it, converged)

    return minimize
