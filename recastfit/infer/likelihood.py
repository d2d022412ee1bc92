"""Twice-NLL value, gradient and Gauss-Newton pieces of a dense HistFactory model.

Written against an array namespace (``numpy`` or ``jax.numpy``) so the same code serves
the jitted engine and the numpy diagnostics of the reference path.

Cells (sample x bin) carry ``nu_c = A_c * X_c * M_c`` with ``A`` the nominal plus histosys
deltas, ``X`` the product of normsys factors and ``M`` the product of multiplicative
parameters (normfactor, lumi, shapefactor, staterror, shapesys). The Jacobian
``J[b, p] = d nu_b / d theta_p`` is exact; curvature is taken as Gauss-Newton
``J^T W J`` plus the (exact, diagonal) constraint curvature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Ops", "numpy_ops", "jax_ops", "derive_cells", "bin_terms", "nll_terms", "constraint_widths"]

LOG_2PI = math.log(2.0 * math.pi)
# pyhf code4 polynomial: coefficients = A^{-1} b with alpha0 = 1
_CODE4_AINV = np.array(
    [
        [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
        [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
        [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
        [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
        [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
        [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
    ]
)


@dataclass(frozen=True)
class Ops:
    """An array namespace plus the special functions and scatter the likelihood needs."""

    xp: Any
    xlogy: Any
    gammaln: Any
    is_jax: bool

    def scatter_add(self, out, idx, vals):
        """``out[idx] += vals`` with repeated indices accumulating (a copy for numpy)."""
        if self.is_jax:
            return out.at[idx].add(vals)
        out = out.copy()
        np.add.at(out, idx, vals)
        return out

    def set_cols(self, out, idx, vals):
        """``out[:, idx] += vals`` (``idx`` unique)."""
        if self.is_jax:
            return out.at[:, idx].add(vals)
        out = out.copy()
        out[:, idx] += vals
        return out


def numpy_ops() -> Ops:
    from scipy.special import gammaln, xlogy

    return Ops(np, xlogy, gammaln, False)


def jax_ops() -> Ops:
    import jax.numpy as jnp
    from jax.scipy.special import gammaln, xlogy

    return Ops(jnp, xlogy, gammaln, True)


def derive_cells(raw: dict, ns_code: str, hs_code: str, ops: Ops) -> dict:
    """Interpolation inputs of a cell group from its raw numbers (see ``RawCells``)."""
    xp = ops.xp
    nom = raw["nom"]
    loghi, loglo = xp.log(raw["ns_hi"]), xp.log(raw["ns_lo"])
    out = {"nom": nom, "loghi": loghi, "loglo": loglo, "st_d": raw["st_d"], "sh_d": raw["sh_d"]}
    if ns_code == "code4":
        hi, lo = raw["ns_hi"], raw["ns_lo"]
        b = xp.stack([hi - 1.0, lo - 1.0, loghi * hi, -loglo * lo, loghi**2 * hi, loglo**2 * lo])
        out["c4"] = xp.einsum("ij,jkc->ikc", xp.asarray(_CODE4_AINV), b)
    on = raw["hs_on"]
    up = on * (raw["hs_hi"] - nom[None, :])
    dn = on * (nom[None, :] - raw["hs_lo"])
    out["up"], out["dn"] = up, dn
    if hs_code == "code4p":
        out["hS"], out["hA"] = 0.5 * (up + dn), 0.0625 * (up - dn)
    return out


def _normsys(a, d: dict, code: str, ops: Ops):
    """Factors f [K, C] and d log f / d alpha [K, C] for normsys alphas ``a`` [K, 1]."""
    xp = ops.xp
    if code == "code4":
        inner = xp.abs(a) < 1.0
        slope = xp.where(a >= 1.0, d["loghi"], -d["loglo"])
        ex = xp.exp(xp.where(inner, 0.0, a) * slope)
        ai = xp.where(inner, a, 0.0)
        c = d["c4"]
        poly = 1.0 + ai * (c[0] + ai * (c[1] + ai * (c[2] + ai * (c[3] + ai * (c[4] + ai * c[5])))))
        dpoly = c[0] + ai * (2 * c[1] + ai * (3 * c[2] + ai * (4 * c[3] + ai * (5 * c[4] + ai * 6 * c[5]))))
        f = xp.where(inner, poly, ex)
        safe = xp.where(xp.abs(f) < 1e-300, 1e-300, f)
        g = xp.where(inner, dpoly / safe, slope)
        return f, g
    slope = xp.where(a >= 0.0, d["loghi"], -d["loglo"])
    return xp.exp(a * slope), slope


def _histosys(h, d: dict, code: str, ops: Ops):
    """Deltas [Kh, C] and their derivatives for histosys alphas ``h`` [Kh, 1]."""
    xp = ops.xp
    if code == "code4p":
        inner = xp.abs(h) <= 1.0
        hi_ = xp.where(inner, h, 0.0)
        h2 = hi_ * hi_
        poly = hi_ * d["hS"] + h2 * (15.0 + h2 * (-10.0 + 3.0 * h2)) * d["hA"]
        dpoly = d["hS"] + hi_ * (30.0 + h2 * (-40.0 + 18.0 * h2)) * d["hA"]
        lin = xp.where(h > 1.0, d["up"], d["dn"])
        return xp.where(inner, poly, h * lin), xp.where(inner, dpoly, lin)
    lin = xp.where(h > 0.0, d["up"], d["dn"])
    return h * lin, lin


def _cell_terms(theta_ext, d: dict, st: dict, ns_par, hs_par, codes: tuple[str, str], ops: Ops):
    """Cell rates [C] and derivatives: normsys [K, C], histosys [Kh, C], multiplicative slots [C, R]."""
    xp = ops.xp
    f, g = _normsys(theta_ext[ns_par][:, None], d, codes[0], ops)
    x = xp.prod(f, axis=0)
    delta, ddelta = _histosys(theta_ext[hs_par][:, None], d, codes[1], ops)
    a = d["nom"] + xp.sum(delta, axis=0)
    fac = theta_ext[st["mult"]]  # [C, R]
    width = fac.shape[1]
    m = xp.prod(fac, axis=1)
    xa = x * a
    nu = xa * m
    # leave-one-out products of the multiplicative slots (R is small and static)
    loo = xp.stack(
        [
            xp.prod(fac[:, [q for q in range(width) if q != r]], axis=1) if width > 1 else xp.ones_like(m)
            for r in range(width)
        ],
        axis=1,
    )
    return nu, nu * g, (x * m) * ddelta, xa[:, None] * loo


def bin_terms(theta, groups: list[tuple[dict, dict]], nbins: int, ns_par, hs_par, codes, ops: Ops):
    """Expected main data ``nu`` [B] and Jacobian ``J`` [B, P] summed over cell groups.

    ``groups`` holds ``(derived, static)`` pairs: ``derived`` from :func:`derive_cells`,
    ``static`` from :func:`recastfit.infer.dense.static_part` (``mult`` [C, R], ``cbin`` [C]).
    """
    xp = ops.xp
    npar = theta.shape[0]
    theta_ext = xp.concatenate([theta, xp.ones(1, dtype=theta.dtype)])
    nu = xp.zeros(nbins, dtype=theta.dtype)
    jns = xp.zeros((nbins, len(ns_par)), dtype=theta.dtype)
    jhs = xp.zeros((nbins, len(hs_par)), dtype=theta.dtype)
    jm = xp.zeros((nbins, npar + 1), dtype=theta.dtype)
    for d, st in groups:
        nu_c, dns, dhs, dm = _cell_terms(theta_ext, d, st, ns_par, hs_par, codes, ops)
        cb = st["cb"]
        nu = nu + nu_c @ cb
        jns = jns + (dns @ cb).T
        jhs = jhs + (dhs @ cb).T
        jm = ops.scatter_add(jm, (st["cbin"][:, None], st["mult"]), dm)
    jac = jm[:, :npar]
    if len(ns_par):
        jac = ops.set_cols(jac, ns_par, jns)
    if len(hs_par):
        jac = ops.set_cols(jac, hs_par, jhs)
    return nu, jac


def constraint_widths(groups: list[tuple[dict, dict]], base_sigma, ops: Ops):
    """Staterror widths (pyhf: sqrt(sum delta^2) / sum nominal per bin) and shapesys factors.

    Returns ``sigma`` [P] (``base_sigma`` where no staterror; 1 where the width is zero)
    and ``tau`` [P] (1 where no shapesys or an invalid bin).
    """
    xp = ops.xp
    npar = base_sigma.shape[0]
    s2 = sn = tau = xp.zeros(npar + 1)
    for d, st in groups:
        s2 = ops.scatter_add(s2, st["st_idx"], d["st_d"] ** 2)
        sn = ops.scatter_add(sn, st["st_idx"], d["nom"])
        valid = (d["nom"] > 0) & (d["sh_d"] > 0)
        t = xp.where(valid, (d["nom"] / xp.where(valid, d["sh_d"], 1.0)) ** 2, 1.0)
        tau = ops.scatter_add(tau, st["sh_idx"], t)
    s2, sn, tau = s2[:npar], sn[:npar], tau[:npar]
    has_st = sn != 0.0  # only staterror parameters receive a nonzero nominal sum
    width = xp.where(sn > 0, xp.sqrt(s2) / xp.where(sn > 0, sn, 1.0), 0.0)
    sigma = xp.where(has_st, xp.where(width > 0, width, 1.0), base_sigma)
    has_sh = tau != 0.0
    tau = xp.where(has_sh, tau, 1.0)
    return sigma, tau


def _saturated(k, ops: Ops):
    """``k - k log k + lgamma(k + 1)`` (minus the saturated Poisson log-likelihood), stably."""
    xp = ops.xp
    big = k > 10.0
    kb = xp.where(big, k, 11.0)
    stirling = (
        0.5 * xp.log(2.0 * math.pi * kb) + 1.0 / (12.0 * kb) - 1.0 / (360.0 * kb**3) + 1.0 / (1260.0 * kb**5)
    )
    ks = xp.where(big, 1.0, k)
    direct = ks - ops.xlogy(ks, ks) + ops.gammaln(ks + 1.0)
    return xp.where(big, stirling, direct)


def nll_terms(theta, nu, jac, n, aux, sigma, tau, gauss, pois, ops: Ops, with_const: bool = True):
    """Twice NLL, its gradient, Gauss-Newton bin weights ``w`` [B] and constraint curvature [P].

    ``aux`` is the auxiliary data: the Gaussian means and, for Poisson-constrained parameters,
    the observed aux counts (``tau`` for the real data). ``gauss``/``pois`` are 0/1 masks.
    Poisson terms are written relative to their saturated value, ``nu - n - n log(nu / n)``,
    so that large counts (shapesys factors reach 1e14) do not cancel catastrophically.
    """
    xp = ops.xp
    ratio = n / nu
    n_safe = xp.where(n > 0, n, 1.0)
    value = 2.0 * xp.sum(nu - n - ops.xlogy(n, nu / n_safe))
    pull = (theta - aux) / sigma
    value = value + xp.sum(gauss * pull**2)
    is_p = pois > 0
    aux_p = xp.where(is_p, aux, 0.0)  # masked entries must stay finite (0 * nan is nan)
    theta_p = xp.where(is_p, theta, 1.0)
    rate = theta_p * tau
    aux_safe = xp.where(aux_p > 0, aux_p, 1.0)
    value = value + 2.0 * xp.sum(xp.where(is_p, rate - aux_p - ops.xlogy(aux_p, rate / aux_safe), 0.0))
    if with_const:
        value = value + 2.0 * xp.sum(_saturated(n, ops))
        value = value + xp.sum(gauss * (2.0 * xp.log(sigma) + LOG_2PI))
        value = value + 2.0 * xp.sum(xp.where(is_p, _saturated(aux_p, ops), 0.0))
    grad = jac.T @ (2.0 * (1.0 - ratio))
    grad = grad + gauss * 2.0 * pull / sigma + xp.where(is_p, 2.0 * (tau - aux_p / theta_p), 0.0)
    w = 2.0 / nu  # Fisher scoring: exact for log-linear (multiplicative) effects, PD always
    curv = gauss * 2.0 / sigma**2 + xp.where(is_p, 2.0 * aux_p / theta_p**2, 0.0)
    return value, grad, w, curv
