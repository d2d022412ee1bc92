"""Write the demo to a folder: the pallet, the signal yields and the grid as a points file."""

from __future__ import annotations

from pathlib import Path

from recastfit.demo.grid import PARAMETERS, UNITS, demo_grid, demo_points, point_name
from recastfit.demo.workspace import background_workspace
from recastfit.fileio import write_json_atomic
from recastfit.signals.yields_file import write_yields_file

__all__ = ["write_demo"]


def write_demo(out: Path | str, grid: str = "full") -> dict[str, Path]:
    """Write the demo under ``out``; returns the paths by role.

    * ``pallet/BkgOnly.json`` (``workspace``): the background-only workspace;
    * ``signal_yields.json`` (``yields``): every grid point's signal yields;
    * ``points.json`` (``points``): ``[{name, values}]``, an ordinary points file (e.g. for
      ``signal.points`` of a ``recast`` config);
    * ``grid.json`` (``grid``): ``{parameters, units, points}``, the same points with their axes.

    ``grid`` names the grid (``full``: 54 points, ``small``: 6 points; see :func:`demo_grid`).
    """
    out = Path(out)
    pts = demo_grid(grid)
    points = [{"name": point_name(m1, m2), "values": [m1, m2]} for m1, m2 in pts]
    paths = {
        "workspace": out / "pallet" / "BkgOnly.json",
        "yields": out / "signal_yields.json",
        "points": out / "points.json",
        "grid": out / "grid.json",
    }
    write_json_atomic(paths["workspace"], background_workspace())
    write_yields_file(paths["yields"], demo_points(pts), PARAMETERS)
    write_json_atomic(paths["points"], points)
    write_json_atomic(paths["grid"], {"parameters": PARAMETERS, "units": UNITS, "points": points})
    return paths
