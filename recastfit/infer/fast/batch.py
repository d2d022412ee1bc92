"""Orchestration: group tasks by structure, cache models, pad batches, retry, build results."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from recastfit.infer.diagnostics import at_bounds, failure_reason, timed_out
from recastfit.infer.fast.structure import (
    PatchInfo,
    Structure,
    Unsupported,
    analyse,
    split_patch,
    unify_patches,
)
from recastfit.results import FitSettings, HypotestResult, PatchTask, digest

__all__ = ["run_batch", "clear_cache", "bucket_size", "BUCKETS", "MAX_CHUNK"]

# padded batch sizes: at most 2x padding (retries run one fit per row, so their row counts vary)
BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024)
MAX_CHUNK = 1024

log = logging.getLogger(__name__)

_STRUCTURES: OrderedDict = OrderedDict()  # (bkg digest, skeleton, signs, untracked) -> Structure | str
_RUNNERS: OrderedDict = OrderedDict()  # (structure key, mu_test) -> Runner
_BKG_DIGESTS: dict[int, tuple[object, str]] = {}
_CACHE_SIZE = 32
NLL_TOL = 1e-6


def clear_cache() -> None:
    _STRUCTURES.clear()
    _RUNNERS.clear()
    _BKG_DIGESTS.clear()


def bucket_size(n: int) -> int:
    """Smallest bucket holding ``n`` points (batches are padded to fixed shapes).

    >>> bucket_size(59), bucket_size(5000)
    (64, 1024)
    """
    for b in BUCKETS:
        if n <= b:
            return b
    return BUCKETS[-1]


def _remember(cache: OrderedDict, key, value):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def _bkg_digest(bkg_spec: dict) -> str:
    hit = _BKG_DIGESTS.get(id(bkg_spec))
    if hit is not None and hit[0] is bkg_spec:
        return hit[1]
    d = digest(bkg_spec)
    _BKG_DIGESTS.clear()
    _BKG_DIGESTS[id(bkg_spec)] = (bkg_spec, d)
    return d


def _structure(bkg_spec: dict, bkg_key: str, patch: list[dict], info: PatchInfo):
    """(full key, Structure or the reason it is unsupported) for one (unified) patch."""
    base = (bkg_key, info.skeleton)
    probe = _STRUCTURES.get(base)
    if probe is None:
        try:
            probe = analyse(bkg_spec, patch, info)
        except Unsupported as exc:
            probe = f"not supported by the fast engine: {exc}"
        _remember(_STRUCTURES, base, probe)
    if isinstance(probe, str):
        return base, probe
    key = base + probe.subkey(info.leaves)
    hit = _STRUCTURES.get(key)
    if hit is None:
        own = probe.subkey(probe.leaves)
        hit = probe if key == base + own else analyse(bkg_spec, patch, info)
        _remember(_STRUCTURES, key, hit)
    return key, hit


def _runner(key, structure: Structure, mu_test: float):
    from recastfit.infer.fast.hypotest import Runner

    rkey = (key, mu_test)
    hit = _RUNNERS.get(rkey)
    if hit is None:
        hit = _remember(_RUNNERS, rkey, Runner(structure, mu_test))
    return hit


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    if len(rows) == size:
        return rows
    return np.concatenate([rows, np.repeat(rows[:1], size - len(rows), axis=0)])


def _size(runner, kind: str, n: int) -> int:
    """Batch size for ``n`` rows: the smallest already-compiled size that holds them, else a bucket.

    Compiling a new size costs seconds to a minute; iterating a few padded rows costs little.
    """
    fits = [size for k, size in runner.compiled if k == kind and size >= n]
    return min(fits) if fits else bucket_size(n)


def _chunks(n: int, chunk: int = MAX_CHUNK):
    for lo in range(0, n, chunk):
        yield lo, min(n, lo + chunk)


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _bkg_fits(runner, leaves: np.ndarray, deadline: float | None = None):
    """mu=0 fits [N] (shared: one fit broadcast) with retries; returns (theta, value, ok, pgrad, tried)."""
    from recastfit.infer.fast.hypotest import STARTS

    rows = leaves[:1] if runner.shared else leaves
    n = len(rows)
    theta = np.zeros((n, runner.dense.npars))
    value = np.full(n, np.inf)
    ok = np.zeros(n, bool)
    tried = np.zeros(n, bool)
    pgrad = np.full(n, np.inf)
    todo = np.arange(n)
    for start in range(STARTS):
        if not len(todo):
            break
        for lo, hi in _chunks(len(todo), runner.chunk):
            if _expired(deadline):
                break
            idx = todo[lo:hi]
            out = runner.bkg_fit(_padded(rows[idx], _size(runner, "bkg", len(idx))), start)
            m = len(idx)
            better = out.converged[:m] & (out.value[:m] < value[idx])
            upd = better | ~tried[idx]
            theta[idx[upd]] = out.theta[:m][upd]
            value[idx[upd]] = out.value[:m][upd]
            pgrad[idx[upd]] = out.pgrad_norm[:m][upd]
            ok[idx[upd]] = out.converged[:m][upd]
            tried[idx] = True
        todo = np.flatnonzero(~ok)
    if runner.shared:
        k = len(leaves)
        return tuple(np.repeat(a, k, 0) for a in (theta, value, ok, pgrad, tried))
    return theta, value, ok, pgrad, tried


def _point_fits(runner, leaves: np.ndarray, theta_bkg: np.ndarray, counter=None, deadline=None):
    """Three fits per point: Gauss-Newton for all, then Newton-CG retries for the fits it left
    unconverged, one fit per row (compacted: a hard point's converged fits are not redone).

    The first retry starts where Gauss-Newton stopped (usually a few Newton steps from the
    minimum); later ones from other starting points. Returns ``(fits, retries, tried)``;
    ``tried`` is False for points the deadline left unfitted.
    """
    from recastfit.infer.fast.hypotest import STARTS

    best = None
    n = len(leaves)
    retries = np.zeros(n, int)
    tried = np.zeros(n, bool)
    for lo, hi in _chunks(n, runner.chunk):
        if _expired(deadline):
            break
        idx = np.arange(lo, hi)
        m = len(idx)
        size = _size(runner, "points-False", m)
        out = runner.point_fits(_padded(leaves[idx], size), _padded(theta_bkg[idx], size))
        if best is None:
            best = _empty_like(out, n)
        for name in ("value", "theta", "pgrad", "decrement", "iterations", "converged", "asimov_free"):
            getattr(best, name)[idx] = getattr(out, name)[:m]
        tried[idx] = True
        if counter is not None:
            counter.add(int(best.converged[idx].all(axis=1).sum()))
    if best is None:
        return best, retries, tried
    # (point, fit) pairs still to do
    todo = np.argwhere(tried[:, None] & ~best.converged)
    for start in range(1, STARTS):
        if not len(todo):
            break
        for lo, hi in _chunks(len(todo), runner.chunk):
            if _expired(deadline):
                break
            pi, fi = todo[lo:hi, 0], todo[lo:hi, 1]
            m = len(pi)
            size = _size(runner, "points-True", m)
            out = runner.retry_fits(
                _padded(leaves[pi], size),
                _padded(theta_bkg[pi], size),
                _padded(fi, size),
                _padded(best.theta[pi, fi], size),
                start,
            )
            retries[np.unique(pi)] += 1
            was_done = best.converged[pi].all(axis=1)
            conv = out.converged[:m]
            better = conv & (~best.converged[pi, fi] | (out.value[:m] < best.value[pi, fi]))
            sel_p, sel_f = pi[better], fi[better]
            for name in ("value", "theta", "pgrad", "decrement", "converged"):
                getattr(best, name)[sel_p, sel_f] = getattr(out, name)[:m][better]
            best.iterations[pi, fi] += out.iterations[:m]
            if counter is not None:
                now_done = best.converged[pi].all(axis=1) & ~was_done
                counter.add(len(np.unique(pi[now_done])))
        todo = todo[~best.converged[todo[:, 0], todo[:, 1]]]
    return best, retries, tried


def _empty_like(out, n: int):
    from recastfit.infer.fast.hypotest import PointFits

    return PointFits(
        *(
            np.zeros((n,) + np.asarray(a).shape[1:], np.asarray(a).dtype)
            for a in (
                out.value,
                out.theta,
                out.pgrad,
                out.decrement,
                out.iterations,
                out.converged,
                out.asimov_free,
            )
        )
    )


def _run_group(
    runner,
    tasks: list[PatchTask],
    leaves: np.ndarray,
    settings: FitSettings,
    offsets: np.ndarray,
    counter=None,
    deadline: float | None = None,
) -> list[HypotestResult]:
    """Fits, retries and results of one structure group (``offsets``: NLL constants to remove)."""
    from recastfit.infer.asymptotics import cls_from_q
    from recastfit.infer.fast.hypotest import FIT_NAMES

    t0 = time.perf_counter()
    dm = runner.dense
    theta_b, value_b, ok_b, pgrad_b, tried_b = _bkg_fits(runner, leaves, deadline)
    if not tried_b.all():
        return [timed_out(t, "fast") for t in tasks]
    fits, retries, tried = _point_fits(runner, leaves, theta_b, counter, deadline)
    if fits is None:
        return [timed_out(t, "fast") for t in tasks]
    # a free fit worse than the fixed-POI one missed the global minimum: the fixed point is better
    worse = fits.value[:, 0] > fits.value[:, 1] + NLL_TOL
    fits.value[worse, 0] = fits.value[worse, 1]
    fits.theta[worse, 0] = fits.theta[worse, 1]
    fits.converged[worse, 0] = fits.converged[worse, 1]
    mu_hat = fits.theta[:, 0, dm.poi]
    q = np.clip(fits.value[:, 1] - fits.value[:, 0], 0.0, None)
    if settings.test_stat == "qtilde" or settings.test_stat == "q":
        q = np.where(mu_hat > settings.mu_test, 0.0, q)
    q_a = np.clip(fits.value[:, 2] - fits.asimov_free, 0.0, None)
    cls_obs, cls_exp = cls_from_q(q, q_a, settings.test_stat)
    per_point = (time.perf_counter() - t0) / max(len(tasks), 1)
    free = ~dm.fixed
    results = []
    expired = _expired(deadline)
    for i, task in enumerate(tasks):
        if not tried[i] or (expired and not fits.converged[i].all()):
            results.append(timed_out(task, "fast"))
            continue
        fit_diag = {}
        for f, name in enumerate(FIT_NAMES):
            fit_diag[name] = {
                "nll": float(fits.value[i, f]) / 2.0 - offsets[i],
                "grad_norm": float(fits.pgrad[i, f]),
                "decrement": float(fits.decrement[i, f]),
                "iterations": int(fits.iterations[i, f]),
                "converged": bool(fits.converged[i, f]),
                "at_bounds": at_bounds(fits.theta[i, f], dm.lo, dm.hi, free, dm.par_names),
            }
        fit_diag["fixed_bkg"] = {
            "nll": float(value_b[i]) / 2.0 - offsets[i],
            "grad_norm": float(pgrad_b[i]),
            "converged": bool(ok_b[i]),
            "shared": runner.shared,
        }
        reason = failure_reason(fit_diag)
        if reason is None and not (np.isfinite(cls_obs[i]) and np.all(np.isfinite(cls_exp[i]))):
            reason = f"non-finite CLs (q={q[i]:.4g}, q_asimov={q_a[i]:.4g})"
        diag = {
            "grad_norm": max(d["grad_norm"] for d in fit_diag.values()),
            "at_bounds": fit_diag["free_data"]["at_bounds"],
            "iterations": int(fits.iterations[i].sum()),
            "retries": int(retries[i]),
            "nll": fit_diag["free_data"]["nll"],
            "q": float(q[i]),
            "q_asimov": float(q_a[i]),
            "fits": fit_diag,
        }
        results.append(
            HypotestResult(
                name=task.name,
                values=list(task.values),
                status="ok" if reason is None else "failed",
                cls_obs=float(cls_obs[i]),
                cls_exp=[float(v) for v in cls_exp[i]],
                mu_hat=float(mu_hat[i]),
                reason=reason,
                wall_time=per_point,
                engine="fast",
                diagnostics=diag,
            )
        )
    return results


def _handover(tasks: list[PatchTask], why: str) -> list[HypotestResult]:
    """Results for points the fast engine does not fit: ``failed`` with ``handover`` = why."""
    log.info("fast engine: %d task(s) handed over to pyhf: %s", len(tasks), why)
    return [
        HypotestResult(
            t.name, list(t.values), "failed", reason=why, engine="fast", diagnostics={"handover": why}
        )
        for t in tasks
    ]


def run_batch(
    bkg_spec: dict,
    tasks: Sequence[PatchTask],
    settings: FitSettings,
    *,
    progress: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
) -> list[HypotestResult]:
    """Fast-engine hypothesis tests of ``tasks`` (see :func:`recastfit.infer.fast.hypotest_batch`)."""
    tasks = list(tasks)
    if not tasks:
        return []
    if settings.calctype != "asymptotics" or settings.test_stat not in ("qtilde", "q"):
        why = f"calctype={settings.calctype!r}, test_stat={settings.test_stat!r} not implemented"
        return _handover(tasks, why)
    bkg_key = _bkg_digest(bkg_spec)
    unified, offsets = unify_patches(bkg_spec, [t.patch for t in tasks])
    groups: dict = {}
    for i, task in enumerate(tasks):
        info = split_patch(unified[i])
        key, structure = _structure(bkg_spec, bkg_key, unified[i], info)
        groups.setdefault(key, (structure, []))[1].append((i, task, info))
    results: list[HypotestResult | None] = [None] * len(tasks)
    counter = _Counter(len(tasks), progress)
    for key, (structure, members) in groups.items():
        idx = [m[0] for m in members]
        group_tasks = [m[1] for m in members]
        if isinstance(structure, str):
            out = _handover(group_tasks, structure)
        elif deadline is not None and time.monotonic() >= deadline:
            out = [timed_out(t, "fast") for t in group_tasks]
        else:
            leaves = np.stack([m[2].leaves for m in members])
            runner = _runner(key, structure, float(settings.mu_test))
            out = _run_group(runner, group_tasks, leaves, settings, offsets[idx], counter, deadline)
            for r in out:
                if not r.ok and r.reason != "timeout":
                    r.diagnostics["handover"] = "fast-engine fit failed"
        counter.add(len(out) - counter.pending())
        for i, r in zip(idx, out, strict=True):
            results[i] = r
    return results  # type: ignore[return-value]


class _Counter:
    """Reports points done (across groups) to a ``progress(done, total)`` callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None):
        self.total, self.done, self.callback, self._group = total, 0, callback, 0

    def add(self, n: int) -> None:
        if n <= 0:
            return
        self.done += n
        self._group += n
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total)

    def pending(self) -> int:
        """Points of the current group already reported (reset for the next group)."""
        n, self._group = self._group, 0
        return n
