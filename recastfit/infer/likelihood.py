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

__all__ = [
    "Ops",
    "numpy_ops",
    "jax_ops",
    "derive_cells",
    "bin_terms",
    "jac_layout",
    "nll_terms",
    "constraint_widths",
]

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


def derive_cells(raw: dict, ns_code: str, hs_code: str, ops: Ops, ns_row=None) -> dict:
    """Interpolation inputs of a cell group from its raw numbers (see ``RawCells``).

    Normsys inputs are laid out per cell as listed by ``ns_row`` [C, L] (see
    :func:`recastfit.infer.dense.static_part`; default: every row on every cell).
    """
    xp = ops.xp
    nom = raw["nom"]
    nk, nc = raw["ns_hi"].shape
    if ns_row is None:
        ns_row = np.tile(np.arange(max(nk, 1)) if nk else np.zeros(1, int), (nc, 1))
    ones = xp.ones((1, nc), dtype=nom.dtype)
    cells = np.arange(nc)[:, None]
    hi = xp.concatenate([raw["ns_hi"], ones])[ns_row, cells]  # [C, L], padding: factor 1
    lo = xp.concatenate([raw["ns_lo"], ones])[ns_row, cells]
    loghi, loglo = xp.log(hi), xp.log(lo)
    out = {"nom": nom, "loghi": loghi, "loglo": loglo, "st_d": raw["st_d"], "sh_d": raw["sh_d"]}
    if ns_code == "code4":
        b = xp.stack([hi - 1.0, lo - 1.0, loghi * hi, -loglo * lo, loghi**2 * hi, loglo**2 * lo])
        out["c4"] = xp.einsum("ij,jkc->ikc", xp.asarray(_CODE4_AINV), b)
    on = raw["hs_on"]
    up = on * (raw["hs_hi"] - nom[None, :])
    dn = on * (nom[None, :] - raw["hs_lo"])
    # every histosys delta is h * hS + a(h) * hA with a(h) a function of the parameter alone
    # (see _hs_shape): the sum over histosys rows is then two (rows x cells) matrix products
    out["hS"], out["hA"] = 0.5 * (up + dn), 0.0625 * (up - dn)
    return out


def _normsys(a, d: dict, code: str, ops: Ops):
    """Factors f and d log f / d alpha for normsys alphas ``a`` (all [C, L])."""
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


def _hs_shape(h, code: str, ops: Ops):
    """``a(h)`` and ``a'(h)`` [Kh] such that a histosys delta is ``h * hS + a(h) * hA``.

    With ``hS = (up + dn) / 2`` and ``hA = (up - dn) / 16`` (``up = hi - nom``, ``dn = nom - lo``):
    code4p is ``h hS + h^2 (15 - 10 h^2 + 3 h^4) hA`` for ``|h| <= 1`` and ``h up`` / ``h dn``
    (``a = 8 |h|``) outside; code0 is ``h up`` / ``h dn`` everywhere (at ``h = 0`` the slope is
    ``dn``'s, as in pyhf).

    >>> import numpy as np
    >>> a, da = _hs_shape(np.array([-2.0, -0.5, 0.0, 0.5, 1.0, 2.0]), "code4p", numpy_ops())
    >>> a.tolist(), da.tolist()
    ([16.0, 3.171875, 0.0, 3.171875, 8.0, 16.0], [-8.0, -10.5625, 0.0, 10.5625, 8.0, 8.0])
    """
    xp = ops.xp
    if code == "code4p":
        inner = xp.abs(h) <= 1.0
        hi_ = xp.where(inner, h, 0.0)
        h2 = hi_ * hi_
        a = xp.where(inner, h2 * (15.0 + h2 * (-10.0 + 3.0 * h2)), 8.0 * xp.abs(h))
        da = xp.where(inner, hi_ * (30.0 + h2 * (-40.0 + 18.0 * h2)), xp.where(h > 0.0, 8.0, -8.0))
        return a, da
    pos = h > 0.0
    return xp.where(pos, 8.0 * h, -8.0 * h), xp.where(pos, 8.0, -8.0)


def _cell_terms(theta_ext, d: dict, st: dict, hs_par, codes: tuple[str, str], ops: Ops):
    """Cell rates [C], normsys slot derivatives [C, L], the histosys Jacobian [B, Kh] and the
    multiplicative-slot derivatives [C, R]."""
    xp = ops.xp
    f, g = _normsys(theta_ext[st["ns_pidx"]], d, codes[0], ops)
    x = xp.prod(f, axis=1)
    h = theta_ext[hs_par]
    ha, dha = _hs_shape(h, codes[1], ops)
    a = d["nom"] + h @ d["hS"] + ha @ d["hA"]
    fac = theta_ext[st["mult"]]  # [C, R]
    width = fac.shape[1]
    m = xp.prod(fac, axis=1)
    xm = x * m
    nu = a * xm
    # d nu_b / d h_k = sum over cells c of bin b: xm_c (hS_kc + a'(h_k) hA_kc)
    y = xm[:, None] * st["cb"]  # [C, B]
    jhs = (d["hS"] @ y).T + dha[None, :] * (d["hA"] @ y).T
    # leave-one-out products of the multiplicative slots (R is small and static)
    loo = xp.stack(
        [
            xp.prod(fac[:, [q for q in range(width) if q != r]], axis=1) if width > 1 else xp.ones_like(m)
            for r in range(width)
        ],
        axis=1,
    )
    return nu, nu[:, None] * g, jhs, (x * a)[:, None] * loo


def jac_layout(statics: list[dict], npar: int, nbins: int, hs_par) -> dict:
    """Gather tables that assemble the Jacobian [B, P] without scatters (slow under ``vmap`` on CPU).

    ``statics`` are the groups' :func:`recastfit.infer.dense.static_part` dicts (numpy). The
    per-cell slot derivatives (multiplicative slots ``mult`` [C, R], then normsys ``ns_pidx``
    [C, L], group after group, flattened) are summed per (bin, parameter) pair: ``m_src`` [U, M]
    holds, for each pair that occurs, the positions of its terms (their total length = a zero
    slot). ``src`` [B * P, S] holds the positions of the S (1 or 2) terms of each Jacobian entry
    in the concatenation of those U pair sums, the histosys Jacobian [B, Kh] (flattened) and a zero.

    >>> lay = jac_layout([{"mult": np.array([[0, 2], [1, 2]]), "cbin": np.array([0, 0]),
    ...                    "ns_pidx": np.array([[2], [2]])}], 2, 1, [])
    >>> lay["m_src"].tolist(), lay["src"].tolist()
    ([[0], [2]], [[0], [1]])
    """
    hs_par = np.asarray(hs_par, int)
    pairs, flats, offset = [], [], 0
    for st in statics:
        cbin = np.asarray(st["cbin"], int)
        for key in ("mult", "ns_pidx"):
            slots = np.asarray(st[key], int)
            pairs.append((cbin[:, None] * (npar + 1) + slots).reshape(-1))
            flats.append(offset + np.arange(slots.size))
            offset += slots.size
    pair = np.concatenate(pairs) if pairs else np.zeros(0, int)
    flat = np.concatenate(flats) if flats else np.zeros(0, int)
    keep = pair % (npar + 1) < npar  # the padding slot (the constant 1) has no parameter
    pair, flat = pair[keep], flat[keep]
    uniq, inv = np.unique(pair, return_inverse=True)
    counts = np.bincount(inv, minlength=len(uniq))
    m_src = np.full((len(uniq), max(int(counts.max(initial=0)), 1)), offset)
    order = np.argsort(inv, kind="stable")
    rank = np.arange(len(inv)) - np.repeat(np.cumsum(counts) - counts, counts)
    m_src[inv[order], rank] = flat[order]
    nu_, nkh = len(uniq), len(hs_par)
    b_u, p_u = uniq // (npar + 1), uniq % (npar + 1)
    # a parameter may act as a normsys and a histosys at once (one name, two modifiers): then
    # its column sums two sources, so each entry has up to ``width`` sources (the rest: the zero)
    width = 1 + int(len(np.intersect1d(p_u, hs_par)) > 0)
    src = np.full((nbins, npar, width), nu_ + nbins * nkh)
    src[b_u, p_u, 0] = np.arange(nu_)
    if nkh:
        src[:, hs_par, width - 1] = nu_ + np.arange(nbins)[:, None] * nkh + np.arange(nkh)[None, :]
    return {"m_src": m_src, "src": src.reshape(nbins * npar, width)}


def bin_terms(theta, groups: list[tuple[dict, dict]], nbins: int, hs_par, codes, ops: Ops, layout=None):
    """Expected main data ``nu`` [B] and Jacobian ``J`` [B, P] summed over cell groups.

    ``groups`` holds ``(derived, static)`` pairs: ``derived`` from :func:`derive_cells`,
    ``static`` from :func:`recastfit.infer.dense.static_part` (``mult`` [C, R], ``cbin`` [C], ...).
    ``layout`` is :func:`jac_layout` of the groups' static parts (computed here when omitted,
    which needs them as numpy arrays).
    """
    xp = ops.xp
    npar = theta.shape[0]
    if layout is None:
        layout = jac_layout([st for _, st in groups], npar, nbins, hs_par)
    theta_ext = xp.concatenate([theta, xp.ones(1, dtype=theta.dtype)])
    nu = xp.zeros(nbins, dtype=theta.dtype)
    jhs = xp.zeros((nbins, len(hs_par)), dtype=theta.dtype)
    slots = []
    for d, st in groups:
        nu_c, dns, dhs, dm = _cell_terms(theta_ext, d, st, hs_par, codes, ops)
        nu = nu + nu_c @ st["cb"]
        jhs = jhs + dhs
        slots += [dm.reshape(-1), dns.reshape(-1)]
    zero = xp.zeros(1, dtype=theta.dtype)
    pair_sums = xp.sum(xp.concatenate(slots + [zero])[layout["m_src"]], axis=1)
    full = xp.concatenate([pair_sums, jhs.reshape(-1), zero])
    return nu, xp.sum(full[layout["src"]], axis=1).reshape(nbins, npar)


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
