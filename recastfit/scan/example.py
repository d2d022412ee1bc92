"""Synthetic yields tables for examples, tests and benchmarks (offline, reproducible from a seed).

Yields are log-uniform in [``low``, ``high``] events per column; a fraction ``hard_fraction`` of
the rows carries signals ``hard_factor`` times larger (deeply excluded points, where a pMSSM
scan spends most of its rows). Two model parameters ``m1`` > ``m2`` are drawn uniformly.

>>> t = random_yields(["y1", "y2"], 100, seed=1)
>>> t.num_rows, t.column_names
(100, ['name', 'm1', 'm2', 'y1', 'y2'])
>>> 0.1 <= min(t.column("y1").to_pylist()) and max(t.column("y2").to_pylist()) <= 50 * 300
True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recastfit.fileio import write_json_atomic

__all__ = ["EXAMPLE_COLUMNS", "random_yields", "write_example"]

#: Yields columns of the example scan on the demo workspace: four SRA bins and the SRB bin.
EXAMPLE_COLUMNS = {
    "demo_sra": {f"sra_{b}": ("SRA", b) for b in range(4)},
    "demo_srb": {"srb": ("SRB", 0)},
}


def random_yields(
    columns: Sequence[str],
    rows: int,
    *,
    seed: int = 0,
    low: float = 0.1,
    high: float = 50.0,
    hard_fraction: float = 0.1,
    hard_factor: float = 300.0,
) -> Any:
    """A ``pyarrow.Table``: ``name``, ``m1``, ``m2`` and log-uniform yields per column."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    m1 = rng.uniform(100.0, 1500.0, rows)
    m2 = m1 * rng.uniform(0.0, 0.9, rows)
    hard = rng.uniform(size=rows) < hard_fraction
    data: dict[str, Any] = {"name": pa.array([f"pt{i:07d}" for i in range(rows)]), "m1": m1, "m2": m2}
    for col in columns:
        y = np.exp(rng.uniform(np.log(low), np.log(high), rows))
        data[col] = np.where(hard, y * hard_factor, y)
    return pa.table(data)


def write_example(yields: str | Path, workspace: str | Path, rows: int = 2000, seed: int = 0) -> None:
    """Write the demo background workspace and a yields table with :data:`EXAMPLE_COLUMNS`."""
    import pyarrow.parquet as pq

    from recastfit.demo import background_workspace

    write_json_atomic(workspace, background_workspace())
    cols = [c for a in EXAMPLE_COLUMNS.values() for c in a]
    table = random_yields(cols, rows, seed=seed, low=0.05, high=20.0, hard_fraction=0.05, hard_factor=30.0)
    path = Path(yields)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    pq.write_table(table, part)
    part.replace(path)
