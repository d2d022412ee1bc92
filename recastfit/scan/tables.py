"""Reading and writing scan tables (Parquet or CSV), streamed in record batches, with named errors.

A table is opened as a :mod:`pyarrow.dataset`; only the needed columns are read and one batch
is held at a time. A file that cannot be read (truncated Parquet, a CSV row with a missing
field, a column of the wrong type) ends in :class:`~recastfit.errors.InputError` naming the file
and the column.

>>> table_format(Path("scan.parquet")), table_format(Path("yields.csv.gz"))
('parquet', 'csv')
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from recastfit.errors import InputError

__all__ = [
    "ID_CANDIDATES",
    "check_numeric",
    "iter_batches",
    "open_dataset",
    "open_writer",
    "table_format",
]

ID_CANDIDATES = ("name", "id", "point", "point_id")


def table_format(path: Path) -> str:
    """``"csv"`` or ``"parquet"`` from the file name (a folder is a Parquet dataset)."""
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    if suffix.endswith((".parquet", ".pq")) or path.is_dir():
        return "parquet"
    raise InputError(str(path), None, "expected a .parquet or .csv table")


def _arrow_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowException, OSError, ValueError)


def open_dataset(path: Path) -> Any:
    """The table at ``path`` as a ``pyarrow.dataset.Dataset`` (schema read, data not yet)."""
    import pyarrow.dataset as ds

    if not path.exists():
        raise InputError(str(path), None, "scan table not found")
    fmt = table_format(path)
    try:
        return ds.dataset(str(path), format=fmt)
    except _arrow_errors() as exc:
        raise InputError(str(path), None, f"unreadable {fmt} table: {exc}") from None


def iter_batches(path: Path, columns: list[str], batch_size: int, dataset: Any = None) -> Iterator[Any]:
    """Record batches of ``columns``; a read error mid-file is an :class:`InputError` naming the file."""
    dataset = dataset if dataset is not None else open_dataset(path)
    try:
        yield from dataset.to_batches(columns=columns, batch_size=batch_size)
    except _arrow_errors() as exc:
        raise InputError(str(path), None, f"unreadable table (truncated or malformed?): {exc}") from None


def check_numeric(path: Path, schema: Any, columns: Sequence[str], what: str) -> None:
    """Every column of ``columns`` exists and holds numbers (integers or floats; booleans are not numbers)."""
    import pyarrow.types as pt

    names = schema.names
    for col in columns:
        if col not in names:
            raise InputError(str(path), col, f"column missing ({what}); the table has {names[:20]}")
        typ = schema.field(col).type
        if pt.is_null(typ):  # an all-empty CSV column: read as nulls, flagged per row
            continue
        if not (pt.is_integer(typ) or pt.is_floating(typ)) or pt.is_boolean(typ):
            raise InputError(str(path), col, f"expected numbers ({what}), got a column of type {typ}")


def open_writer(out: Path, schema: Any) -> Any:
    """A streaming CSV or Parquet writer for ``out`` (chosen by suffix)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if table_format(out) == "csv":
        import pyarrow.csv as pcsv

        return pcsv.CSVWriter(str(out), schema)
    import pyarrow.parquet as pq

    return pq.ParquetWriter(str(out), schema)
