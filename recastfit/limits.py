"""Size and time limits on untrusted inputs, in one place (each overridable by an environment variable).

Every limit has a default that is generous for real analyses and small enough that a hostile
input cannot exhaust memory, disk or time. Raise one by setting its variable, e.g.
``RECASTFIT_MAX_DOWNLOAD_BYTES=8e9`` (numbers may be written as floats).

>>> limit("max_config_bytes") == LIMITS["max_config_bytes"].default
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["LIMITS", "Limit", "limit"]


@dataclass(frozen=True)
class Limit:
    """One limit: its default, the environment variable that overrides it, and what it bounds."""

    default: float
    env: str
    doc: str


LIMITS: dict[str, Limit] = {
    "max_config_bytes": Limit(1 << 20, "RECASTFIT_MAX_CONFIG_BYTES", "a workflow config file"),
    "max_input_bytes": Limit(
        256 << 20, "RECASTFIT_MAX_INPUT_BYTES", "a yields, cross-section, points or SLHA file"
    ),
    "max_effmap_bytes": Limit(64 << 20, "RECASTFIT_MAX_EFFMAP_BYTES", "one efficiency-map text file"),
    "max_workspace_bytes": Limit(
        1 << 30, "RECASTFIT_MAX_WORKSPACE_BYTES", "a workspace or PatchSet JSON file"
    ),
    "max_download_bytes": Limit(2 << 30, "RECASTFIT_MAX_DOWNLOAD_BYTES", "one download"),
    "max_unpacked_bytes": Limit(2 << 30, "RECASTFIT_MAX_UNPACKED_BYTES", "an archive's unpacked size"),
    "max_archive_members": Limit(100_000, "RECASTFIT_MAX_ARCHIVE_MEMBERS", "members of one archive"),
    "download_deadline_s": Limit(1800, "RECASTFIT_DOWNLOAD_DEADLINE", "seconds for one whole download"),
    "min_download_rate": Limit(
        1024,
        "RECASTFIT_MIN_DOWNLOAD_RATE",
        "bytes/s averaged over min_rate_window_s below which a download stops",
    ),
    "min_rate_window_s": Limit(
        30, "RECASTFIT_MIN_RATE_WINDOW", "seconds over which min_download_rate is averaged"
    ),
    "max_api_bytes": Limit(64 << 20, "RECASTFIT_MAX_API_BYTES", "one JSON answer of the HEPData API"),
    "max_scan_rows": Limit(10_000_000, "RECASTFIT_MAX_SCAN_ROWS", "rows of one scan's yields table"),
    "max_name_length": Limit(128, "RECASTFIT_MAX_NAME_LENGTH", "characters of an analysis or point name"),
    "max_worker_rss_bytes": Limit(
        2 << 30, "RECASTFIT_MAX_WORKER_RSS", "resident memory of one fit worker before it is killed"
    ),
    "worker_startup_s": Limit(
        120, "RECASTFIT_WORKER_STARTUP", "seconds added to each batch's time budget (start-up, compilation)"
    ),
    "max_result_bytes": Limit(
        10_000_000, "RECASTFIT_MAX_RESULT_BYTES", "one task result from a remote worker"
    ),
    "recast_timeout_s": Limit(
        86400, "RECASTFIT_RECAST_TIMEOUT", "seconds for one yadage-run (one recast point), unless set"
    ),
}


def limit(name: str) -> float:
    """The value of limit ``name``: its environment variable if set (and positive), else the default."""
    spec = LIMITS[name]
    raw = os.environ.get(spec.env)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if value > 0:
            return value
    return spec.default
