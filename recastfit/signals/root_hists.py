"""Signal yields from ROOT histograms (read and written with ``uproot``; no ROOT needed).

One TH1 per signal/control region and point: bin contents are the expected signal yields
per bin, bin errors (``sqrt(sumw2)``) the MC-stat uncertainty. A histogram written without
``Sumw2`` carries no MC-stat information, so its ``stat`` is ``None``.

Two layouts, both chosen with a histogram-path ``pattern``:

- one file per point (``files: "hists/{point}.root"``, ``pattern: "{region}"``, the default), as
  a preserved-analysis workflow writes for each point it runs;
- one file for the whole grid with a directory per point (``pattern: "{point}/{region}"``).

``regions`` maps histogram (region) names to workspace channels; without it every TH1 found
becomes the channel of the same name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recastfit.errors import InputError
from recastfit.signals.model import ChannelYields, PointYields, invalid_yields

__all__ = [
    "read_root_point",
    "read_root_grid",
    "write_root_yields",
    "list_points",
]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    if "{region}" not in pattern:
        raise InputError("root", "pattern", f"must contain '{{region}}', got {pattern!r}")
    parts = re.split(r"(\{point\}|\{region\})", pattern)
    body = "".join(
        "(?P<point>[^/]+)" if p == "{point}" else "(?P<region>[^/]+)" if p == "{region}" else re.escape(p)
        for p in parts
    )
    return re.compile(f"^{body}$")


def _histograms(path: Path) -> dict[str, object]:
    import uproot

    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, "ROOT file not found")
    try:
        f = uproot.open(path)
    except Exception as exc:  # uproot raises many types for a non-ROOT file
        raise InputError(str(path), None, f"not a readable ROOT file: {exc}") from None
    with f:
        return {
            key: f[key]
            for key, cls in f.classnames(recursive=True, cycle=False).items()
            if cls.startswith("TH1")
        }


def _channel(path: Path, key: str, hist: object, point: str) -> ChannelYields:
    values = np.asarray(hist.values(flow=False), dtype=float)
    sumw2 = hist.member("fSumw2")
    stat = None
    if sumw2 is not None and len(sumw2) > 0:
        stat = tuple(float(v) for v in np.asarray(hist.errors(flow=False), dtype=float))
    bad = invalid_yields(values)
    if bad:
        raise InputError(str(path), key, f"point '{point}': expected finite yields >= 0, got {bad}")
    return ChannelYields(tuple(float(v) for v in values), stat)


def _collect(
    path: Path,
    hists: dict[str, object],
    regex: re.Pattern[str],
    point: str | None,
    regions: Mapping[str, str] | None,
    label: str,
    pattern: str,
) -> dict[str, ChannelYields]:
    found: dict[str, str] = {}
    for key in hists:
        m = regex.match(key)
        if m and (point is None or m.groupdict().get("point", point) == point):
            found[m.group("region")] = key
    wanted = dict(regions) if regions else {r: r for r in sorted(found)}
    missing = [r for r in wanted if r not in found]
    if missing:
        raise InputError(
            str(path),
            f"point '{label}'",
            f"no TH1 for region(s) {missing} (pattern {pattern!r}); histograms present: {sorted(hists)[:20]}",
        )
    return {ch: _channel(path, found[r], hists[found[r]], label) for r, ch in wanted.items()}


def read_root_point(
    path: Path,
    name: str,
    values: Sequence[float],
    *,
    pattern: str = "{region}",
    regions: Mapping[str, str] | None = None,
) -> PointYields:
    """One point's yields from ``path``; ``pattern`` may contain ``{point}`` (filled with ``name``)."""
    hists = _histograms(path)
    regex = _pattern_regex(pattern.replace("{point}", name) if "{point}" in pattern else pattern)
    channels = _collect(Path(path), hists, regex, None, regions, name, pattern)
    if not channels:
        raise InputError(str(path), f"point '{name}'", f"no TH1 histograms match pattern {pattern!r}")
    return PointYields(name, tuple(float(v) for v in values), channels)


def list_points(path: Path, pattern: str = "{point}/{region}") -> list[str]:
    """Point names present in a one-file grid (the ``{point}`` part of matching histograms)."""
    if "{point}" not in pattern:
        raise InputError(
            str(path), "pattern", f"must contain '{{point}}' for a one-file grid, got {pattern!r}"
        )
    regex = _pattern_regex(pattern)
    return sorted({m.group("point") for k in _histograms(path) if (m := regex.match(k))})


def read_root_grid(
    path: Path,
    points: Sequence[tuple[str, Sequence[float]]],
    *,
    pattern: str = "{point}/{region}",
    regions: Mapping[str, str] | None = None,
) -> list[PointYields]:
    """All ``points`` (name, values) from one ROOT file holding one directory per point."""
    if "{point}" not in pattern:
        raise InputError(
            str(path), "pattern", f"must contain '{{point}}' for a one-file grid, got {pattern!r}"
        )
    hists = _histograms(path)
    regex = _pattern_regex(pattern)
    out = []
    for name, values in points:
        channels = _collect(Path(path), hists, regex, name, regions, name, pattern)
        out.append(PointYields(name, tuple(float(v) for v in values), channels))
    return out


def _th1(name: str, cy: ChannelYields) -> object:
    from uproot.writing.identify import to_TAxis, to_TH1x

    n = len(cy.yields)
    values = np.array([0.0, *cy.yields, 0.0])
    stat = np.array([0.0, *(cy.stat if cy.stat is not None else cy.yields), 0.0])
    sumw2 = stat**2 if cy.stat is not None else None
    centres = np.arange(n) + 0.5
    body = values[1:-1]
    return to_TH1x(
        fName=None,
        fTitle=name,
        data=values,
        fEntries=float(body.sum()),
        fTsumw=float(body.sum()),
        fTsumw2=float(sumw2[1:-1].sum()) if sumw2 is not None else float(body.sum()),
        fTsumwx=float((body * centres).sum()),
        fTsumwx2=float((body * centres**2).sum()),
        fSumw2=sumw2,
        fXaxis=to_TAxis("xaxis", "", n, 0.0, float(n)),
    )


def write_root_yields(
    path: Path, points: Sequence[PointYields], *, pattern: str = "{point}/{region}"
) -> Path:
    """Write points as TH1D per region (bin i spans [i, i+1]; errors = ``stat`` when given)."""
    import uproot

    if len(points) > 1 and "{point}" not in pattern:
        raise ValueError("several points need a pattern containing '{point}'")
    with uproot.recreate(path) as f:
        for p in points:
            for ch, cy in p.channels.items():
                f[pattern.format(point=p.name, region=ch)] = _th1(ch, cy)
    return Path(path)
