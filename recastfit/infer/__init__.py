"""Hypothesis tests: the pyhf reference and the batched fast engine share one result type.

Layers (imports only go down): :mod:`recastfit.infer.dense`, :mod:`~recastfit.infer.likelihood`,
:mod:`~recastfit.infer.asymptotics` and :mod:`~recastfit.infer.diagnostics` describe the
HistFactory likelihood (numpy; JAX through an array namespace); :mod:`~recastfit.infer.reference`
(pyhf) and :mod:`recastfit.infer.fast` (JAX) are the engines, neither imports the other; this
module picks the engine and sends the points the fast engine hands over to pyhf.

Hooks for runners: ``progress(done, total)`` is called as points finish within a call, and
``deadline`` (a :func:`time.monotonic` value) stops the work: points not finished by then are
``failed`` with reason ``"timeout"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from recastfit.results import FitSettings, HypotestResult, PatchTask

__all__ = ["hypotest_batch", "suggested_batch_size", "Progress"]

Progress = Callable[[int, int], None]


def hypotest_batch(
    bkg_spec: dict,
    tasks: Sequence[PatchTask],
    settings: FitSettings,
    *,
    progress: Progress | None = None,
    deadline: float | None = None,
) -> list[HypotestResult]:
    """Hypothesis tests of ``tasks`` on ``bkg_spec`` with the engine named in ``settings``."""
    from recastfit.infer.reference import hypotest_batch as ref_batch

    tasks = list(tasks)
    if settings.engine != "fast":
        return ref_batch(bkg_spec, tasks, settings, progress=progress, deadline=deadline)
    from recastfit.infer.fast import hypotest_batch as fast_batch

    results = fast_batch(bkg_spec, tasks, settings, progress=progress, deadline=deadline)
    handover = [i for i, r in enumerate(results) if r.diagnostics.get("handover")]
    if not handover:
        return results
    redo = ref_batch(bkg_spec, [tasks[i] for i in handover], settings, deadline=deadline)
    for i, r in zip(handover, redo, strict=True):
        fast = results[i]
        why = fast.diagnostics["handover"]
        tried = "fits" in fast.diagnostics  # the fast engine fitted and failed (else: not expressible)
        if r.ok or not tried:
            r.diagnostics["fallback"] = why
            if tried:
                r.diagnostics["fast_failure"] = fast.reason
            results[i] = r
        else:
            fast.diagnostics.pop("handover")
            fast.diagnostics["pyhf_failure"] = r.reason
    if progress is not None:
        progress(len(tasks), len(tasks))
    return results


def suggested_batch_size(spec: dict) -> int:
    """Points per batch for the fast engine on ``spec`` (a workspace dict), from the model's size.

    Peak memory of a batch grows with points x bins x parameters (the fitted Jacobians); the
    size is chosen so that a worker stays under 2 GiB (see :func:`recastfit.infer.dense.chunk_size`);
    1,024 for stau-size models. The fast engine itself never runs more points than this at once.

    >>> suggested_batch_size({"channels": [{"name": "SR", "samples": [{"data": [1.0],
    ...     "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}]}]})
    1024
    """
    from recastfit.infer.dense import chunk_size, spec_size

    return chunk_size(*spec_size(spec))
