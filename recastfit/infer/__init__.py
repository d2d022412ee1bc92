"""Hypothesis tests: the pyhf reference and the batched fast engine share one result type."""

from __future__ import annotations

from collections.abc import Sequence

from recastfit.results import FitSettings, HypotestResult, PatchTask

__all__ = ["hypotest_batch", "ENGINES"]

ENGINES = ("pyhf", "fast")


def hypotest_batch(bkg_spec: dict, tasks: Sequence[PatchTask], settings: FitSettings) -> list[HypotestResult]:
    """Hypothesis tests of ``tasks`` on ``bkg_spec`` with the engine named in ``settings``."""
    if settings.engine == "fast":
        from recastfit.infer.fast import hypotest_batch as fast_batch

        return fast_batch(bkg_spec, tasks, settings)
    from recastfit.infer.reference import hypotest_batch as ref_batch

    return ref_batch(bkg_spec, tasks, settings)
