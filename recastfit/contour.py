"""Exclusion contours from CLs values on (ir)regular 2D grids.

As HistFitter's ``harvestToContours.py``: CLs is turned into the significance
``Z = Phi^-1(1 - CLs)`` (clipped at +-``sigma_max``), the axes are rescaled to [0, 1], points are
mirrored across the kinematic boundary ``m2 = m1`` when asked, ``Z`` is interpolated (thin-plate
radial basis functions by default, or linear on the Delaunay triangulation) onto a fine regular
grid, and the level set ``Z = Phi^-1(1 - level)`` (1.64485 for CLs = 0.05) is traced with
contourpy. Grid nodes outside the convex hull of the usable points are masked, so no line is ever
extrapolated; points whose status is ``failed`` (or whose CLs is not finite) are left out.

>>> import numpy as np
>>> xs, ys = np.meshgrid(np.linspace(0, 10, 11), np.linspace(0, 10, 11))
>>> pts = np.c_[xs.ravel(), ys.ravel()]
>>> cls = 0.05 * np.exp(pts[:, 0] - 5.0)          # CLs = 0.05 exactly on x = 5
>>> lines = level_lines(pts, significance(cls), mirror=False)
>>> bool(np.allclose(lines[0][:, 0], 5.0, atol=0.05))
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import Delaunay, QhullError
from scipy.stats import norm

from recastfit.errors import ConfigError, InputError
from recastfit.fileio import load_json_file, write_json_atomic, write_text_atomic

__all__ = [
    "LINE_KINDS",
    "ContourSet",
    "GridField",
    "significance",
    "level_lines",
    "interpolate_field",
    "interpolate_fields",
    "peel_slivers",
    "load_results",
    "results_arrays",
    "contours_from_results",
    "read_contour_lines",
    "ContourOptions",
    "figure_from_results",
    "draw_contour_files",
]

# line name -> which CLs it is built from: "obs" or the index into cls_exp (pyhf order -2..+2 sigma)
LINE_KINDS: dict[str, str | int] = {
    "observed": "obs",
    "expected": 2,
    "expected_minus1sigma": 1,
    "expected_plus1sigma": 3,
    "expected_minus2sigma": 0,
    "expected_plus2sigma": 4,
}


def significance(cls: np.ndarray | Sequence[float], sigma_max: float = 5.0) -> np.ndarray:
    """``Z = Phi^-1(1 - CLs)``, clipped to ``[-sigma_max, sigma_max]`` (CLs -> 1 and CLs -> 0)."""
    z = norm.isf(np.clip(np.asarray(cls, dtype=float), 0.0, 1.0))
    return np.clip(z, -sigma_max, sigma_max)


@dataclass
class GridField:
    """An interpolated significance surface on a regular grid (NaN outside the hull)."""

    x: np.ndarray  # (nx,)
    y: np.ndarray  # (ny,)
    z: np.ndarray  # (ny, nx), NaN where masked


def _min_angles(pts: np.ndarray, simplices: np.ndarray) -> np.ndarray:
    """Smallest interior angle (degrees) of each triangle."""
    tri = pts[simplices]  # (m, 3, 2)
    out = np.full(len(simplices), 180.0)
    for k in range(3):
        a = tri[:, (k + 1) % 3] - tri[:, k]
        b = tri[:, (k + 2) % 3] - tri[:, k]
        cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-300)
        out = np.minimum(out, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return out


def peel_slivers(tri: Delaunay, min_angle: float = 12.0) -> np.ndarray:
    """Mask (True = drop) of boundary triangles thinner than ``min_angle`` degrees, peeled inwards.

    Irregular scans leave long, thin triangles along the convex hull; interpolating inside them
    mixes far-apart points and draws lines where no point constrains the surface.
    """
    drop = np.zeros(len(tri.simplices), dtype=bool)
    thin = _min_angles(tri.points, tri.simplices) < min_angle
    while True:
        nb = tri.neighbors
        on_edge = np.any((nb < 0) | drop[np.where(nb < 0, 0, nb)] & (nb >= 0), axis=1)
        new = on_edge & thin & ~drop
        if not new.any():
            return drop
        drop |= new


def _mirror(points: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add the images of the points across ``y = x`` (points on the line are not duplicated)."""
    off = ~np.isclose(points[:, 0], points[:, 1])
    image = points[off][:, ::-1]
    return np.vstack([points, image]), np.concatenate([values, values[off]], axis=0)


def interpolate_fields(
    points: np.ndarray,
    z: np.ndarray,
    *,
    mirror: bool = False,
    method: str = "rbf",
    resolution: int = 300,
    smoothing: float = 0.0,
    min_angle: float = 12.0,
) -> list[GridField]:
    """Interpolate ``z`` (shape (n,) or (n, k), at ``points`` (n, 2)) onto a regular grid over the
    points' bounding box; one :class:`GridField` per column of ``z``.

    ``method``: ``"rbf"`` (thin-plate spline, scipy's RBFInterpolator with ``smoothing``; the
    HistFitter default is also a radial-basis interpolation) or ``"linear"`` (on the Delaunay
    triangulation). Axes are rescaled to [0, 1] first; nodes outside the convex hull of ``points``
    (before mirroring), or inside the thin triangles along its edge (:func:`peel_slivers`,
    ``min_angle`` degrees; 0 keeps them), are NaN.
    """
    points = np.asarray(points, dtype=float)
    z = np.asarray(z, dtype=float)
    zz = z[:, None] if z.ndim == 1 else z
    if len(points) < 3:
        raise ValueError(f"need at least 3 usable points to interpolate, got {len(points)}")
    if not np.all(np.isfinite(points)):
        raise ValueError("grid coordinates must be finite numbers")
    lo, hi = points.min(axis=0), points.max(axis=0)
    with np.errstate(over="ignore"):
        span = np.where(hi > lo, hi - lo, 1.0)
    if not np.all(np.isfinite(span)):
        raise ValueError(f"grid coordinates span too wide a range to interpolate ({lo} to {hi})")
    try:
        hull = Delaunay((points - lo) / span)
    except QhullError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "Qhull error"
        raise ValueError(f"the points do not span a 2D region (all on a line?): {first}") from None
    src, val = _mirror(points, zz) if mirror else (points, zz)
    src = (src - lo) / span
    gx, gy = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    mx, my = np.meshgrid((gx - lo[0]) / span[0], (gy - lo[1]) / span[1])
    nodes = np.c_[mx.ravel(), my.ravel()]
    # a tiny tolerance keeps nodes on the hull edges (grid corners) inside
    simplex = hull.find_simplex(nodes, tol=1e-9)
    inside = simplex >= 0
    if min_angle > 0:
        inside &= ~peel_slivers(hull, min_angle)[np.where(inside, simplex, 0)]
    out = np.full((len(nodes), zz.shape[1]), np.nan)
    if method == "linear":
        from scipy.interpolate import LinearNDInterpolator

        out[inside] = LinearNDInterpolator(src, val)(nodes[inside])
    elif method == "rbf":
        from scipy.interpolate import RBFInterpolator

        neighbors = None if len(src) <= 2000 else 64
        rbf = RBFInterpolator(src, val, kernel="thin_plate_spline", smoothing=smoothing, neighbors=neighbors)
        out[inside] = rbf(nodes[inside])
    else:
        raise ValueError(f"method must be 'rbf' or 'linear', got {method!r}")
    return [GridField(gx, gy, out[:, k].reshape(resolution, resolution)) for k in range(zz.shape[1])]


def interpolate_field(points: np.ndarray, z: np.ndarray, **kwargs: Any) -> GridField:
    """:func:`interpolate_fields` for one value per point."""
    return interpolate_fields(points, np.asarray(z, dtype=float).reshape(-1), **kwargs)[0]


def _trace(field_: GridField, z_level: float) -> list[np.ndarray]:
    """Polylines where the field crosses ``z_level`` (contourpy, masked outside the hull)."""
    import contourpy

    z = np.ma.masked_invalid(field_.z)
    gen = contourpy.contour_generator(
        field_.x, field_.y, z, line_type=contourpy.LineType.Separate, corner_mask=True
    )
    return [np.asarray(seg, dtype=float) for seg in gen.lines(z_level) if len(seg) >= 2]


def level_lines(
    points: np.ndarray,
    z: np.ndarray,
    *,
    level: float = 0.05,
    mirror: bool = False,
    method: str = "rbf",
    resolution: int = 300,
) -> list[np.ndarray]:
    """Polylines (each an (n, 2) array) of ``CLs = level`` from significances ``z`` at ``points``."""
    fld = interpolate_field(points, z, mirror=mirror, method=method, resolution=resolution)
    return _trace(fld, float(norm.isf(level)))


def load_results(results: Mapping[str, Any] | str | Path) -> tuple[dict, str]:
    """The results dict and a name for error messages (the file path or ``<results>``)."""
    if isinstance(results, Mapping):
        return dict(results), "<results>"
    path = Path(results)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "not found"
        raise InputError(str(path), None, f"results file {what}")
    data = load_json_file(path, what="results file")
    if not isinstance(data, dict):
        raise InputError(str(path), None, f"expected a JSON object, got {type(data).__name__}")
    return data, str(path)


def results_arrays(results: Mapping[str, Any], source: str = "<results>") -> dict[str, np.ndarray]:
    """Arrays from a results dict: ``values`` (n, 2), ``obs`` (n,), ``exp`` (n, 5), ``failed`` (n,).

    CLs of failed points (or points with missing / non-finite CLs) are NaN and ``failed`` is True.
    """
    points = results.get("points")
    if not isinstance(points, list) or not points:
        raise InputError(source, "points", "expected a non-empty list of hypothesis-test results")
    n = len(points)
    values, obs, exp = np.full((n, 2), np.nan), np.full(n, np.nan), np.full((n, 5), np.nan)
    failed = np.zeros(n, dtype=bool)
    for i, p in enumerate(points):
        v = p.get("values") if isinstance(p, dict) else None
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise InputError(source, f"points[{i}].values", f"expected 2 grid coordinates, got {v!r}")
        try:
            values[i] = [float(t) for t in v]
        except (TypeError, ValueError):
            raise InputError(source, f"points[{i}].values", f"expected 2 numbers, got {v!r}") from None
        if not np.all(np.isfinite(values[i])):
            raise InputError(source, f"points[{i}].values", f"expected finite numbers, got {v!r}")
        ce = p.get("cls_exp")
        if p.get("status", "ok") != "ok" or p.get("cls_obs") is None or ce is None:
            failed[i] = True
            continue
        if not isinstance(ce, list | tuple) or len(ce) != 5:
            raise InputError(source, f"points[{i}].cls_exp", f"expected 5 expected CLs values, got {ce!r}")
        try:
            obs[i], exp[i] = float(p["cls_obs"]), [float(c) for c in ce]
        except (TypeError, ValueError):
            got = {"cls_obs": p["cls_obs"], "cls_exp": ce}
            raise InputError(source, f"points[{i}]", f"expected numeric CLs values, got {got!r}") from None
        if not (np.isfinite(obs[i]) and np.all(np.isfinite(exp[i]))):
            failed[i] = True
    obs[failed], exp[failed] = np.nan, np.nan
    return {"values": values, "obs": obs, "exp": exp, "failed": failed}


@dataclass
class ContourSet:
    """The CLs = ``level`` lines of one analysis (several polylines per kind: islands)."""

    analysis: str
    parameters: list[str]
    units: list[str]
    level: float
    lines: dict[str, list[np.ndarray]]
    labels: list[str] = field(default_factory=list)
    mirror: bool = False
    method: str = "rbf"
    fields: dict[str, GridField] = field(default_factory=dict, repr=False)  # for plots, not saved

    def to_dict(self) -> dict[str, Any]:
        """The contour.json contract (plus ``labels``, ``mirror``, ``method``)."""
        return {
            "analysis": self.analysis,
            "parameters": list(self.parameters),
            "units": list(self.units),
            "labels": list(self.labels),
            "level": self.level,
            "mirror": self.mirror,
            "method": self.method,
            "lines": {k: [np.round(seg, 6).tolist() for seg in segs] for k, segs in self.lines.items()},
        }

    def to_json(self, path: str | Path, **extra: Any) -> Path:
        """Write :meth:`to_dict` (plus ``extra`` keys, e.g. ``hepdata_record``) atomically."""
        path = Path(path)
        write_json_atomic(path, {**self.to_dict(), **extra})
        return path

    def to_yaml(
        self,
        path: str | Path,
        arrays: Mapping[str, np.ndarray] | None = None,
        options: Any = None,
        *,
        hepdata_record: str | int | None = None,
    ) -> Path:
        """A single-file HEPData submission (header, then one table per polyline and, with
        ``arrays``, the CLs grid table); see :mod:`recastfit.submission`."""
        from recastfit.submission import single_file_text

        path = Path(path)
        write_text_atomic(path, single_file_text(self, arrays, options, hepdata_record=hepdata_record))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> ContourSet:
        d = load_json_file(path, what="contour file")
        lines = {k: [np.asarray(s, dtype=float).reshape(-1, 2) for s in v] for k, v in d["lines"].items()}
        return cls(
            d.get("analysis", ""),
            d.get("parameters", []),
            d.get("units", []),
            d.get("level", 0.05),
            lines,
            d.get("labels", []),
            d.get("mirror", False),
            d.get("method", "rbf"),
        )


def _want_mirror(mirror: str | bool | None, values: np.ndarray) -> bool:
    if mirror in (None, False, "none"):
        return False
    if mirror in (True, "diagonal"):
        return True
    if mirror == "auto":
        return bool(np.all(values[:, 1] <= values[:, 0]))
    raise ValueError(f"mirror must be 'auto', 'diagonal' or 'none', got {mirror!r}")


def contours_from_results(
    results: Mapping[str, Any] | str | Path,
    *,
    mirror: str | bool | None = "auto",
    level: float = 0.05,
    method: str = "rbf",
    resolution: int = 300,
    sigma_max: float = 5.0,
    source: str | None = None,
) -> ContourSet:
    """Observed, expected and +-1/2 sigma CLs = ``level`` lines from a results.json (path or dict).

    ``mirror="auto"`` mirrors across ``m2 = m1`` only when every point has ``m2 <= m1``;
    ``source`` names the results in errors when ``results`` is a dict read from a file.
    """
    data, name = load_results(results)
    source = source or name
    arr = results_arrays(data, source)
    ok = ~arr["failed"]
    if ok.sum() < 3:
        raise InputError(source, "points", f"need at least 3 points with status 'ok', got {int(ok.sum())}")
    pts = arr["values"][ok]
    do_mirror = _want_mirror(mirror, arr["values"])
    cols = [arr["obs"][ok] if src == "obs" else arr["exp"][ok, int(src)] for src in LINE_KINDS.values()]
    try:
        flds = interpolate_fields(
            pts,
            significance(np.stack(cols, axis=1), sigma_max),
            mirror=do_mirror,
            method=method,
            resolution=resolution,
        )
    except ValueError as exc:
        raise InputError(source, "points", str(exc)) from None
    z_level = float(norm.isf(level))
    fields = dict(zip(LINE_KINDS, flds, strict=True))
    lines = {kind: _trace(fld, z_level) for kind, fld in fields.items()}
    params = list(data.get("parameters") or ["x", "y"])
    units = list(data.get("units") or ["", ""])
    labels = list(data.get("labels") or params)
    return ContourSet(
        str(data.get("analysis", "")), params, units, level, lines, labels, do_mirror, method, fields
    )


def _yaml_documents(text: str, source: str) -> list[Any]:
    """All documents of a YAML stream, with :mod:`recastfit.fileio`'s alias-free safe loader."""
    from recastfit.fileio import load_yaml_documents

    return load_yaml_documents(text, source)


def read_contour_lines(path: str | Path, kind: str = "observed") -> list[np.ndarray]:
    """Reference lines from a file: contour.json (its ``kind`` lines), HEPData YAML (a data file or
    a single-file submission such as our contour.yaml: each table with one independent variable,
    first independent vs first dependent variable; tables qualified with another ``contour`` and
    documents without data are skipped) or whitespace/comma-separated text (x y per line, one
    polyline). Files are read with the size cap of :mod:`recastfit.limits`."""
    from recastfit.fileio import read_text_capped

    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "not found"
        raise InputError(str(path), None, f"reference contour file {what}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            d = load_json_file(path, what="reference contour")
            segs = d["lines"][kind] if isinstance(d, dict) else d
            return [np.asarray(s, dtype=float).reshape(-1, 2) for s in segs]
        text = read_text_capped(path, what="reference contour")
        if suffix in (".yaml", ".yml"):
            out = []
            for doc in _yaml_documents(text, str(path)):
                if not isinstance(doc, dict) or "dependent_variables" not in doc:
                    continue
                if len(doc.get("independent_variables") or []) != 1:
                    continue  # a 2D table (e.g. the CLs grid), not a line
                quals = doc["dependent_variables"][0].get("qualifiers") or []
                if any(q.get("name") == "contour" and q.get("value") != kind for q in quals):
                    continue
                xs = [v["value"] for v in doc["independent_variables"][0]["values"]]
                ys = [v["value"] for v in doc["dependent_variables"][0]["values"]]
                out.append(np.c_[np.asarray(xs, float), np.asarray(ys, float)])
            if not out:
                raise ValueError("no table with one independent and one dependent variable")
            return out
        rows = [
            [float(t) for t in line.replace(",", " ").split()[:2]]
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        return [np.asarray(rows, dtype=float).reshape(-1, 2)]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            str(path), None, f"expected contour.json, HEPData YAML (x, y tables) or 'x y' text: {exc}"
        ) from None


_STYLES = ("plain", "atlas", "cms")
_SQRTS_PATTERN = r"^\s*\d+(\.\d+)?\s*(TeV|GeV)\s*$"


@dataclass(frozen=True)
class ContourOptions:
    """The ``contour:`` section of the config: how lines are computed, drawn and published.

    >>> ContourOptions.from_dict({"sqrts": "13 TeV", "phrases": ["SUSY"]}, file="c.yaml").phrases
    ('SUSY',)
    >>> ContourOptions.from_dict({"band2": "yes"}, file="c.yaml")
    Traceback (most recent call last):
    ...
    recastfit.errors.ConfigError: c.yaml: key 'contour.band2': expected true or false, got 'yes'
    """

    mirror: str = "auto"  # auto | diagonal | none
    level: float = 0.05  # CLs level of the lines
    method: str = "rbf"  # rbf | linear
    resolution: int = 300  # interpolation nodes per axis
    reference: str | None = None  # a published contour to overlay (contour.json, HEPData YAML, 'x y' text)
    reference_label: str = "published"
    title: str | None = None  # figure title (default: the analysis name; "" for none)
    band2: bool = True  # draw the expected +-2 sigma band
    sqrts: str | None = None  # e.g. "13 TeV" (also the HEPData cmenergies keyword)
    lumi: str | None = None  # e.g. "139 fb$^{-1}$"
    label: str | None = None  # analysis text on the figure
    style: str = "plain"  # plain | atlas | cms (mplhep)
    color_by: str = "cls"  # cls | significance
    location: str | None = None  # HEPData table location, e.g. "Reinterpretation of Figure 8a"
    description: str | None = None  # HEPData submission comment, appended to each table's description
    reactions: tuple[str, ...] = ()  # HEPData keywords, e.g. "P P --> CHARGINO1 NEUTRALINO2 X"
    phrases: tuple[str, ...] = ()  # HEPData keywords, e.g. "Supersymmetry"

    @classmethod
    def from_dict(cls, section: Mapping[str, Any] | None, *, file: str) -> ContourOptions:
        """Options from a ``contour:`` section; a bad value is a :class:`ConfigError` naming
        ``file`` and ``contour.<key>`` (the schema checks the same, this also guards the API)."""
        import re

        section = dict(section or {})
        known = {f.name for f in cls.__dataclass_fields__.values()}
        for key in section:
            if key not in known:
                raise ConfigError(
                    file, f"contour.{key}", f"no such key (allowed: {', '.join(sorted(known))})"
                )

        def want(key: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ConfigError(file, f"contour.{key}", expected, section[key])

        kw: dict[str, Any] = {}
        for key, value in section.items():
            if value is None and key in (
                "reference",
                "title",
                "sqrts",
                "lumi",
                "label",
                "location",
                "description",
            ):
                continue
            if key in ("mirror", "method", "style", "color_by"):
                allowed = {
                    "mirror": ("auto", "diagonal", "none"),
                    "method": ("rbf", "linear"),
                    "style": _STYLES,
                    "color_by": ("cls", "significance"),
                }[key]
                want(key, value in allowed, "one of " + ", ".join(allowed))
            elif key == "level":
                good = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1
                want(key, good, "a CLs level between 0 and 1 (e.g. 0.05)")
                value = float(value)
            elif key == "resolution":
                want(
                    key,
                    isinstance(value, int) and not isinstance(value, bool) and 20 <= value <= 2000,
                    "an integer from 20 to 2000",
                )
            elif key == "band2":
                want(key, isinstance(value, bool), "true or false")
            elif key in ("reactions", "phrases"):
                good = isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
                want(key, good, "a list of non-empty strings")
                value = tuple(value)
            else:
                want(key, isinstance(value, str), "a string")
                if key == "sqrts":
                    want(key, re.match(_SQRTS_PATTERN, value) is not None, "an energy like '13 TeV'")
            kw[key] = value
        return cls(**kw)


def figure_from_results(
    results: Mapping[str, Any] | str | Path,
    contour_set: ContourSet,
    *,
    reference: str | Path | Sequence[np.ndarray] | None = None,
    **kwargs: Any,
) -> Any:
    """:func:`recastfit.plot.plot_contours` for a results.json (path or dict) and an optional
    reference contour file; ``kwargs`` go to ``plot_contours`` (png, pdf, style, show_band2, ...)."""
    from recastfit.plot import plot_contours

    data, source = load_results(results)
    arrays = results_arrays(data, source)
    ref = read_contour_lines(reference) if isinstance(reference, str | Path) else reference
    return plot_contours(arrays, contour_set, reference_lines=ref, **kwargs)


def lines_from_results(
    results_json: str | Path | Mapping[str, Any], opts: ContourOptions
) -> tuple[dict[str, np.ndarray], ContourSet]:
    """The results' arrays and their CLs = ``opts.level`` lines (interpolated as ``opts`` says)."""
    data, source = load_results(results_json)
    arrays = results_arrays(data, source)
    cs = contours_from_results(
        data,
        mirror=opts.mirror,
        level=opts.level,
        method=opts.method,
        resolution=opts.resolution,
        source=source,
    )
    return arrays, cs


def draw_figure(
    arrays: dict[str, np.ndarray],
    cs: ContourSet,
    opts: ContourOptions,
    *,
    png: str | Path | None = None,
    pdf: str | Path | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> None:
    """The contour figure as ``opts`` describes it (reference line, style, bands, text)."""
    from recastfit.plot import plot_contours

    plot_contours(
        arrays,
        cs,
        png=png,
        pdf=pdf,
        reference_lines=read_contour_lines(opts.reference) if opts.reference else None,
        reference_label=opts.reference_label,
        title=opts.title,
        xlabel=xlabel,
        ylabel=ylabel,
        color_by=opts.color_by,
        style=opts.style,
        show_band2=opts.band2,
        sqrts=opts.sqrts,
        lumi=opts.lumi,
        label=opts.label,
    )


def draw_contour_files(
    results_json: str | Path,
    out_dir: str | Path,
    options: ContourOptions | None = None,
    *,
    hepdata_record: str | int | None = None,
    figure: bool = True,
) -> dict[str, Any]:
    """Everything the workflow publishes for one analysis, written atomically into ``out_dir``:
    ``contour.json`` (the lines), ``contour.yaml`` (a single-file HEPData submission),
    ``contour.png`` / ``contour.pdf`` (the figure; ``figure=False`` skips them) and the HEPData
    submission folder ``hepdata/`` (validated with hepdata-validator before it replaces an old one).

    ``hepdata_record``: the record the likelihoods came from (``"ins1234567"`` or a HEPData recid,
    e.g. from the fetch manifest via :func:`recastfit.submission.hepdata_reference`); it is stored
    in contour.json and linked from the submission. Returns the paths written and the number of
    polylines per kind. Bad input is an :class:`InputError` naming the results file.
    """
    from recastfit.submission import hepdata_reference, write_submission_folder

    opts = options or ContourOptions()
    out_dir = Path(out_dir)
    arrays, cs = lines_from_results(results_json, opts)
    record = hepdata_reference(hepdata_record)
    meta = {
        "hepdata_record": record,
        "sqrts": opts.sqrts,
        "lumi": opts.lumi,
        "label": opts.label,
        "n_points": int(len(arrays["failed"])),
        "n_failed": int(arrays["failed"].sum()),
    }
    out: dict[str, Any] = {"json": cs.to_json(out_dir / "contour.json", **meta)}
    out["yaml"] = cs.to_yaml(out_dir / "contour.yaml", arrays, opts, hepdata_record=record)
    resources: list[tuple[str, Path]] = []
    if figure:
        draw_figure(arrays, cs, opts, png=out_dir / "contour.png", pdf=out_dir / "contour.pdf")
        out["png"], out["pdf"] = out_dir / "contour.png", out_dir / "contour.pdf"
        resources.append(("Exclusion contours (figure)", out["png"]))
    out["hepdata"] = write_submission_folder(
        cs, arrays, out_dir / "hepdata", opts, hepdata_record=record, resources=resources
    )
    out["lines"] = {k: len(v) for k, v in cs.lines.items()}
    return out
