"""HEPData submissions of exclusion contours, built with hepdata_lib and checked with hepdata-validator.

A submission folder holds ``submission.yaml`` (a header document, then one document per table with its
``data_file`` and ``keywords``) and one YAML data file per table: one per CLs = level line (observed,
expected, expected -1/+1 sigma, expected -2/+2 sigma; a line in several pieces gives one table per piece)
and the CLs grid as a 2D table (independent variables: the grid parameters with their units; one
dependent variable per CLs kind; ``-`` for failed points).

The same tables are also written as one *single-file* submission (``contour.yaml``): HEPData accepts
it as an upload and :func:`validate_single_file` checks it.

This module never imports :mod:`recastfit.contour` (the contour module calls into it): the contour
set is read through its attributes (``analysis``, ``parameters``, ``units``, ``labels``, ``level``,
``lines``) and the grid through the arrays of ``recastfit.contour.results_arrays``.

>>> hepdata_reference("ins1755298"), hepdata_reference("10.17182/hepdata.90607.v3/r3")
('ins1755298', 90607)
>>> hepdata_reference("demo/pallet") is None
True
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from recastfit.errors import InputError, RecastfitError

__all__ = [
    "LINE_TITLES",
    "GRID_TABLE",
    "LINE_DIGITS",
    "CLS_DIGITS",
    "hepdata_reference",
    "cmenergies_gev",
    "build_submission",
    "write_submission_folder",
    "single_file_text",
    "validate_folder",
    "validate_single_file",
]

# line kind (keys of recastfit.contour.LINE_KINDS) -> table title
LINE_TITLES: dict[str, str] = {
    "observed": "Observed limit",
    "expected": "Expected limit",
    "expected_minus1sigma": "Expected limit -1 sigma",
    "expected_plus1sigma": "Expected limit +1 sigma",
    "expected_minus2sigma": "Expected limit -2 sigma",
    "expected_plus2sigma": "Expected limit +2 sigma",
}
GRID_TABLE = "CLs grid"
LINE_DIGITS = 9  # significant digits of coordinates (contour.json keeps 6 decimals)
CLS_DIGITS = 6  # significant digits of CLs values
# dependent variables of the grid table: (header, source) with source "obs" or an index into cls_exp
_GRID_COLUMNS = (
    ("CLs observed", "obs"),
    ("CLs expected", 2),
    ("CLs expected -1 sigma", 1),
    ("CLs expected +1 sigma", 3),
    ("CLs expected -2 sigma", 0),
    ("CLs expected +2 sigma", 4),
)
_INS_RE = re.compile(r"^ins(\d{1,10})(?:\.v\d+)?$", re.I)
_DOI_RE = re.compile(r"^(?:https?://doi\.org/)?10\.17182/hepdata\.(\d+)(?:\.v\d+)?(?:/r\d+)?$", re.I)
_SQRTS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(TeV|GeV)\s*$", re.I)


def hepdata_reference(source: str | int | None) -> str | int | None:
    """The HEPData record of a fetched pallet: ``"ins<INSPIRE id>"``, an integer HEPData recid (from
    a HEPData DOI or a bare number), or None for anything else (a local folder, an archive)."""
    if source is None or isinstance(source, bool):
        return None
    if isinstance(source, int):
        return source if source > 0 else None
    text = str(source).strip()
    if m := _INS_RE.match(text):
        return f"ins{int(m.group(1))}"
    if m := _DOI_RE.match(text):
        return int(m.group(1))
    if text.isdigit() and int(text) > 0:
        return int(text)
    return None


def cmenergies_gev(sqrts: str | None) -> float | None:
    """``"13 TeV"`` -> 13000.0 (the HEPData ``cmenergies`` keyword is in GeV); None when not given.

    >>> cmenergies_gev("13.6 TeV"), cmenergies_gev("900 GeV"), cmenergies_gev(None)
    (13600.0, 900.0, None)
    """
    if not sqrts:
        return None
    m = _SQRTS_RE.match(sqrts)
    if not m:
        raise ValueError(f"expected a centre-of-mass energy like '13 TeV', got {sqrts!r}")
    value = float(m.group(1))
    return value * 1000.0 if m.group(2).lower() == "tev" else value


def _opt(options: Any, name: str, default: Any = None) -> Any:
    return getattr(options, name, default) if options is not None else default


def _keywords(options: Any) -> dict[str, list]:
    kw: dict[str, list] = {"observables": ["CLs"]}
    if reactions := list(_opt(options, "reactions", ()) or ()):
        kw["reactions"] = reactions
    if phrases := list(_opt(options, "phrases", ()) or ()):
        kw["phrases"] = phrases
    energy = cmenergies_gev(_opt(options, "sqrts"))
    if energy is not None:
        kw["cmenergies"] = [energy]
    return kw


def _table_names(lines: Mapping[str, Sequence[np.ndarray]]) -> list[tuple[str, str, int, int]]:
    """(kind, table name, piece index, pieces) for every polyline; unknown kinds keep their key."""
    out = []
    for kind, segs in lines.items():
        title = LINE_TITLES.get(kind, kind)
        for i in range(len(segs)):
            name = title if len(segs) == 1 else f"{title} part {i + 1} of {len(segs)}"
            out.append((kind, name, i, len(segs)))
    return out


def _xy_names(cs: Any) -> tuple[list[str], list[str]]:
    params = (list(cs.parameters) + ["x", "y"])[:2]
    units = (list(cs.units or []) + ["", ""])[:2]
    return params, units


def build_submission(
    cs: Any,
    arrays: Mapping[str, np.ndarray] | None,
    options: Any = None,
    *,
    hepdata_record: str | int | None = None,
    resources: Iterable[tuple[str, Path]] = (),
) -> Any:
    """A :class:`hepdata_lib.Submission` with one table per line piece and the CLs grid table.

    ``arrays``: ``values`` (n, 2), ``obs`` (n,), ``exp`` (n, 5), ``failed`` (n,) (None: no grid
    table). ``resources``: (description, local file) pairs copied into the submission.
    ``hepdata_record``: the record the likelihoods came from (``ins...`` or a HEPData recid).
    """
    Submission, Table, Variable = _hepdata_lib()
    sub = Submission()
    analysis = str(cs.analysis or "analysis")
    description = _opt(options, "description")
    location = _opt(options, "location") or "recastfit reinterpretation"
    sub.comment = description or f"Reinterpretation of {analysis} with recastfit (CLs = {cs.level:g})."
    ref = hepdata_reference(hepdata_record)
    if isinstance(ref, int):
        sub.add_related_recid(ref)
    elif isinstance(ref, str):
        sub.add_additional_resource(
            f"HEPData record {ref} of {analysis} (the likelihoods reinterpreted here)",
            f"https://www.hepdata.net/record/{ref}",
        )
    for text, path in resources:
        sub.add_additional_resource(text, str(path), copy_file=True)
    (xname, yname), (xunit, yunit) = _xy_names(cs)
    keywords = _keywords(options)
    for kind, name, i, n in _table_names(cs.lines):
        seg = np.asarray(cs.lines[kind][i], dtype=float)
        table = Table(name)
        piece = f", part {i + 1} of {n}" if n > 1 else ""
        table.description = (
            f"{LINE_TITLES.get(kind, kind)} (CLs = {cs.level:g}) of {analysis} in the "
            f"({xname}, {yname}) plane{piece}." + (f" {description}" if description else "")
        )
        table.location = location
        table.keywords = dict(keywords)
        x = Variable(xname, is_independent=True, is_binned=False, units=xunit)
        x.values = [float(v) for v in seg[:, 0]]
        y = Variable(yname, is_independent=False, is_binned=False, units=yunit)
        y.values = [float(v) for v in seg[:, 1]]
        x.digits = y.digits = LINE_DIGITS
        y.add_qualifier("contour", kind)
        y.add_qualifier("CLs", f"{cs.level:g}")
        table.add_variable(x)
        table.add_variable(y)
        sub.add_table(table)
    if arrays is not None:
        sub.add_table(_grid_table(cs, arrays, keywords, location, description))
    return sub


def _hepdata_lib() -> tuple[Any, Any, Any]:
    """hepdata_lib's Submission, Table and Variable, or a clear error naming the missing package."""
    try:
        from hepdata_lib import Submission, Table, Variable
    except ImportError as exc:
        raise RecastfitError(
            f"the HEPData submission needs hepdata_lib ({exc}): pip install 'hepdata_lib>=0.15'"
        ) from None
    return Submission, Table, Variable


def _grid_table(
    cs: Any, arrays: Mapping[str, np.ndarray], keywords: dict, location: str, description: Any
) -> Any:
    _, Table, Variable = _hepdata_lib()

    (xname, yname), (xunit, yunit) = _xy_names(cs)
    values = np.asarray(arrays["values"], dtype=float)
    failed = np.asarray(arrays["failed"], dtype=bool)
    table = Table(GRID_TABLE)
    table.description = (
        f"CLs of every grid point of {cs.analysis or 'the analysis'} (observed and expected with its "
        f"-2..+2 sigma variations); '-' marks a point whose fit failed "
        f"({int(failed.sum())} of {len(values)})." + (f" {description}" if description else "")
    )
    table.location = location
    table.keywords = dict(keywords)
    for col, name, unit in ((0, xname, xunit), (1, yname, yunit)):
        var = Variable(name, is_independent=True, is_binned=False, units=unit)
        var.values = [float(v) for v in values[:, col]]
        var.digits = LINE_DIGITS
        table.add_variable(var)
    for header, src in _GRID_COLUMNS:
        col = arrays["obs"] if src == "obs" else np.asarray(arrays["exp"])[:, int(src)]
        var = Variable(header, is_independent=False, is_binned=False)
        var.values = ["-" if bad else float(v) for v, bad in zip(col, failed, strict=True)]
        var.digits = CLS_DIGITS
        table.add_variable(var)
    return table


def _header_doc(sub: Any) -> dict[str, Any]:
    """The first document of submission.yaml (as ``hepdata_lib.Submission.create_files`` writes it)."""
    doc: dict[str, Any] = {"data_license": sub.get_license(), "comment": sub.comment}
    if sub.related_records:
        doc["related_to_hepdata_records"] = list(sub.related_records)
    if sub.additional_resources:
        doc["additional_resources"] = list(sub.additional_resources)
    if sub.record_ids:
        doc["record_ids"] = list(sub.record_ids)
    return doc


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when available: ~10x faster


def _dump(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False, explicit_start=True, default_flow_style=False)


def _table_data(table: Any) -> dict[str, list]:
    """The data file content of a hepdata_lib Table (its variables' ``make_dict``, as plain objects)."""
    data: dict[str, list] = {"independent_variables": [], "dependent_variables": []}
    for var in table.variables:
        key = "independent_variables" if var.is_independent else "dependent_variables"
        data[key].append(_plain(var.make_dict()))
    return data


def _table_entry(table: Any, data_file: str | None = None) -> dict[str, Any]:
    """A table's document in submission.yaml (as hepdata_lib's ``Table.write_yaml`` writes it)."""
    doc: dict[str, Any] = {"name": table.name, "description": table.description, "location": table.location}
    if data_file:
        doc["data_file"] = data_file
    doc["keywords"] = [{"name": k, "values": list(v)} for k, v in table.keywords.items()]
    return doc


def _write_folder(sub: Any, folder: Path) -> None:
    """hepdata_lib's ``create_files`` without its side effects (it also writes ``submission.tar.gz``
    into the current directory and validates with ``assert``) and with libyaml for speed; the
    tables' contents come from hepdata_lib (``Variable.make_dict``: rounding, headers, qualifiers)."""
    docs: list[dict[str, Any]] = [_header_doc(sub)]
    for table in sub.tables:
        data_file = f"{table.name.lower().replace(' ', '_')}.yaml"
        (folder / data_file).write_text(yaml.dump(_table_data(table), Dumper=_DUMPER, sort_keys=False))
        docs.append(_table_entry(table, data_file))
    (folder / "submission.yaml").write_text(_dump(docs))
    sub.copy_files(str(folder))


def validate_folder(folder: str | Path) -> list[str]:
    """hepdata-validator's messages for a submission folder (empty when valid). Offline."""
    from hepdata_validator.full_submission_validator import FullSubmissionValidator

    validator = FullSubmissionValidator(autoload_remote_schemas=False)
    if validator.validate(directory=str(folder)):
        return []
    return [f"{Path(f).name}: {m.message}" for f, msgs in validator.get_messages().items() for m in msgs]


def validate_single_file(path: str | Path) -> list[str]:
    """hepdata-validator's messages for a single-file submission (empty when valid).

    The validator writes the data files of a plain ``.yaml`` into the current directory, so the file
    is checked as a gzipped copy in a temporary folder (it then writes there and cleans up).
    """
    import gzip

    from hepdata_validator.full_submission_validator import FullSubmissionValidator

    with tempfile.TemporaryDirectory(prefix="recastfit-hepdata-") as tmp:
        gz = Path(tmp) / (Path(path).stem + ".yaml.gz")
        with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
        validator = FullSubmissionValidator(autoload_remote_schemas=False)
        if validator.validate(file=str(gz)):
            return []
        return [f"{Path(path).name}: {m.message}" for msgs in validator.get_messages().values() for m in msgs]


def write_submission_folder(
    cs: Any,
    arrays: Mapping[str, np.ndarray] | None,
    dest: str | Path,
    options: Any = None,
    *,
    hepdata_record: str | int | None = None,
    resources: Iterable[tuple[str, Path]] = (),
    validate: bool = True,
) -> Path:
    """Build the submission in a temporary folder beside ``dest``, validate it, then swap it into
    place; on any failure the temporary folder (and only it) is removed and ``dest`` is untouched.

    Raises :class:`InputError` naming ``dest`` with hepdata-validator's messages when invalid.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.part-"))
    try:
        sub = build_submission(cs, arrays, options, hepdata_record=hepdata_record, resources=resources)
        _write_folder(sub, tmp)
        if validate and (messages := validate_folder(tmp)):
            raise InputError(
                str(dest), None, "the HEPData submission is not valid: " + "; ".join(messages[:5])
            )
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a submission is for sharing
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _swap_in(new: Path, dest: Path) -> None:
    """Replace folder ``dest`` by ``new`` (the old one is renamed aside first, then removed)."""
    old = None
    if dest.is_symlink() or dest.is_file():
        raise InputError(
            str(dest), None, "expected a folder for the HEPData submission (a file is in the way)"
        )
    if dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
        os.rmdir(old)
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def single_file_text(
    cs: Any,
    arrays: Mapping[str, np.ndarray] | None,
    options: Any = None,
    *,
    hepdata_record: str | int | None = None,
) -> str:
    """The tables as one single-file HEPData submission: a header document, then one document per
    table with ``name``, ``description``, ``location``, ``keywords`` and the data inline."""
    sub = build_submission(cs, arrays, options, hepdata_record=hepdata_record)
    return _dump([_header_doc(sub)] + [{**_table_entry(t), **_table_data(t)} for t in sub.tables])


def _plain(obj: Any) -> Any:
    """defaultdicts and numpy scalars -> plain YAML-safe Python objects."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
