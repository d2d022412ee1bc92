"""The fast engine: batched, jitted (JAX, float64) asymptotic hypothesis tests.

``hypotest_batch(bkg_spec, tasks, settings)`` returns the same :class:`HypotestResult` as the
pyhf reference (``recastfit.infer.reference``) for every task. Patches are grouped by
structure; each group is fitted in padded batches by one compiled function. Points the dense
model cannot express, settings it does not implement and fits that do not converge are
returned ``failed`` with ``diagnostics["handover"]`` naming why: :func:`recastfit.infer.hypotest_batch`
gives those to pyhf. JAX is imported here, never by ``import recastfit``; compiled programs are
kept on disk (see :mod:`recastfit.infer.fast.jaxsetup`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from recastfit.results import FitSettings, HypotestResult, PatchTask

__all__ = ["hypotest_batch"]


def hypotest_batch(
    bkg_spec: dict,
    tasks: Sequence[PatchTask],
    settings: FitSettings,
    *,
    progress: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
) -> list[HypotestResult]:
    """CLs (observed and expected), best-fit POI, status and diagnostics for every task."""
    from recastfit.infer.fast.batch import run_batch

    return run_batch(bkg_spec, tasks, settings, progress=progress, deadline=deadline)
