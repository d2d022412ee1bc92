"""The fast engine: batched, jitted (JAX, float64) asymptotic hypothesis tests.

``hypotest_batch(bkg_spec, tasks, settings)`` returns the same :class:`HypotestResult` as the
pyhf reference (``recastfit.infer.reference``) for every task. Patches are grouped by
structure; each group is fitted in padded batches by one compiled function. Groups the dense
model cannot express, and settings it does not implement, go to the pyhf reference path.
JAX is imported here, never by ``import recastfit``.
"""

from __future__ import annotations

from collections.abc import Sequence

from recastfit.results import FitSettings, HypotestResult, PatchTask

__all__ = ["hypotest_batch", "BUCKETS", "MAX_CHUNK"]

BUCKETS = (1, 8, 32, 128, 512, 1024)
MAX_CHUNK = 1024


def hypotest_batch(bkg_spec: dict, tasks: Sequence[PatchTask], settings: FitSettings) -> list[HypotestResult]:
    """CLs (observed and expected), best-fit POI, status and diagnostics for every task."""
    from recastfit.infer.fast.batch import run_batch

    return run_batch(bkg_spec, tasks, settings)
