"""Scans without a grid (pMSSM-style): yields rows -> fits through the runner -> best analysis per point.

Split by job:

* :mod:`recastfit.scan.tables` - reading/writing Parquet or CSV tables in streamed batches;
* :mod:`recastfit.scan.config` - the ``scan:`` config section, typed;
* :mod:`recastfit.scan.tasks` - yields rows -> one :class:`~recastfit.results.PatchTask` per row and analysis;
* :mod:`recastfit.scan.run` - chunks of tasks through :func:`recastfit.runner.run_fits` (any back end,
  the SQLite store, resume after a kill) -> the CLs table;
* :mod:`recastfit.scan.summary` - CLs table -> best analysis, excluded flags, summary and projections;
* :mod:`recastfit.scan.figures` - figures of a summary.

"Best" analysis = the lowest median expected CLs (``cls_exp_2``) among the analyses that did not
fail for the point; the point is excluded when that analysis' observed CLs < ``level``. A point
for which every analysis failed is never excluded and is listed in the summary.
"""

from __future__ import annotations

from recastfit.scan.config import ScanConfig, load_scan_config, parse_scan_config
from recastfit.scan.run import ScanOutcome, cls_table_from_yields, run_scan
from recastfit.scan.summary import ScanSummary, best_analysis, detect_analyses, results_to_table, scan_table
from recastfit.scan.tasks import YieldAnalysis, tasks_from_rows

__all__ = [
    "ScanConfig",
    "ScanOutcome",
    "ScanSummary",
    "YieldAnalysis",
    "best_analysis",
    "cls_table_from_yields",
    "detect_analyses",
    "load_scan_config",
    "parse_scan_config",
    "results_to_table",
    "run_scan",
    "scan_table",
    "tasks_from_rows",
]
