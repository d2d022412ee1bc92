"""Dense arrays of a HistFactory model, built from a merged pyhf spec and its ``pyhf.Model``.

The model is stored per *cell* (one sample in one bin of one channel). Every number that a
signal patch can change is a *raw* number copied verbatim from the spec (nominal yields,
normsys factors, histosys templates, staterror/shapesys uncertainties, observations), so
that the positions of patch numbers can be located by substituting sentinels (see
:mod:`recastfit.infer.fast.structure`). Derived quantities (logs, interpolation
coefficients, constraint widths) are computed later from the raw arrays.

The parameter vector is pyhf's (``model.config.par_order`` expanded), so values and
gradients compare 1:1 with ``model.logpdf``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Unsupported",
    "RawCells",
    "DenseModel",
    "build_dense",
    "raw_dict",
    "static_part",
    "spec_size",
    "chunk_size",
    "RAW_CELL_KEYS",
]

RAW_CELL_KEYS = ("nom", "ns_hi", "ns_lo", "hs_hi", "hs_lo", "st_d", "sh_d")
SUPPORTED = {"normfactor", "lumi", "staterror", "shapesys", "shapefactor", "normsys", "histosys"}


class Unsupported(Exception):
    """The model uses something the dense engine does not implement (caller falls back to pyhf)."""


@dataclass
class RawCells:
    """Raw numbers of a set of cells; rows of ``ns_*``/``hs_*`` follow ``DenseModel.ns_par``/``hs_par``."""

    nom: np.ndarray  # [C]
    ns_hi: np.ndarray  # [K, C] normsys hi factor (1 where absent)
    ns_lo: np.ndarray  # [K, C]
    hs_hi: np.ndarray  # [Kh, C] histosys hi template (ignored where hs_on is 0)
    hs_lo: np.ndarray  # [Kh, C]
    hs_on: np.ndarray  # [Kh, C] 1.0 where the histosys acts on the cell
    st_d: np.ndarray  # [C] staterror absolute uncertainty (0 where absent)
    st_par: np.ndarray  # [C] staterror parameter index, -1 if none
    sh_d: np.ndarray  # [C] shapesys absolute uncertainty
    sh_par: np.ndarray  # [C] shapesys parameter index, -1 if none
    mult: np.ndarray  # [C, R] multiplicative parameter indices, P (the constant 1) as padding
    cbin: np.ndarray  # [C] main-data bin of the cell

    def select(self, cells: np.ndarray) -> RawCells:
        """The subset of cells ``cells`` (index array)."""
        return RawCells(
            nom=self.nom[cells],
            ns_hi=self.ns_hi[:, cells],
            ns_lo=self.ns_lo[:, cells],
            hs_hi=self.hs_hi[:, cells],
            hs_lo=self.hs_lo[:, cells],
            hs_on=self.hs_on[:, cells],
            st_d=self.st_d[cells],
            st_par=self.st_par[cells],
            sh_d=self.sh_d[cells],
            sh_par=self.sh_par[cells],
            mult=self.mult[cells],
            cbin=self.cbin[cells],
        )


@dataclass
class DenseModel:
    """Everything the likelihood needs, as numpy arrays, in pyhf's parameter order."""

    par_names: list[str]
    poi: int
    nbins: int
    init: np.ndarray  # [P]
    lo: np.ndarray
    hi: np.ndarray
    fixed: np.ndarray  # [P] bool
    gauss: np.ndarray  # [P] bool: normal constraint
    pois: np.ndarray  # [P] bool: Poisson constraint (shapesys)
    sigma: np.ndarray  # [P] normal widths (staterror ones recomputed from cells)
    aux: np.ndarray  # [P] normal auxdata (Poisson aux = factors, recomputed from cells)
    obs: np.ndarray  # [B]
    ns_par: np.ndarray  # [K]
    hs_par: np.ndarray  # [Kh]
    ns_code: str
    hs_code: str
    cells: RawCells
    names: dict = field(default_factory=dict)  # cell index -> (channel, sample, bin) for messages

    @property
    def npars(self) -> int:
        return len(self.par_names)


def _interp_codes(model) -> tuple[str, str]:
    settings = getattr(model.config, "modifier_settings", {}) or {}
    ns = settings.get("normsys", {}).get("interpcode", "code4")
    hs = settings.get("histosys", {}).get("interpcode", "code4p")
    if ns not in ("code1", "code4") or hs not in ("code0", "code4p"):
        raise Unsupported(f"interpolation codes normsys={ns}, histosys={hs}")
    return ns, hs


def build_dense(spec: dict, model) -> DenseModel:
    """Dense arrays of ``spec`` (the merged workspace spec) laid out as ``model`` (its pyhf model)."""
    cfg = model.config
    ns_code, hs_code = _interp_codes(model)
    names = list(cfg.par_names)
    npar = len(names)
    poi = cfg.poi_index
    if poi is None:
        raise Unsupported("model has no POI")
    gauss = np.zeros(npar, bool)
    pois = np.zeros(npar, bool)
    sigma = np.ones(npar)
    aux = np.zeros(npar)
    for name in cfg.par_order:
        pset = cfg.param_set(name)
        sl = cfg.par_slice(name)
        kind = getattr(pset, "pdf_type", None)
        if kind == "normal":
            gauss[sl] = True
            sigma[sl] = np.asarray(pset.width(), float)
            aux[sl] = np.asarray(pset.auxdata, float)
        elif kind == "poisson":
            pois[sl] = True
    channels = {c["name"]: c for c in spec["channels"]}
    obs_by_name = {o["name"]: o["data"] for o in spec["observations"]}
    nbins = cfg.nmaindata
    obs = np.zeros(nbins)
    ns_rows: dict[int, int] = {}
    hs_rows: dict[int, int] = {}
    cells: list[dict] = []
    for ch_name in cfg.channels:
        off = cfg.channel_slices[ch_name].start
        ch = channels[ch_name]
        obs[cfg.channel_slices[ch_name]] = np.asarray(obs_by_name[ch_name], float)
        for sample in ch["samples"]:
            data = [float(v) for v in sample["data"]]
            sample_cells = [
                {
                    "nom": v,
                    "bin": off + j,
                    "ns": {},
                    "hs": {},
                    "mult": [],
                    "st": None,
                    "sh": None,
                    "name": (ch_name, sample["name"], j),
                }
                for j, v in enumerate(data)
            ]
            for mod in sample.get("modifiers", []):
                _add_modifier(cfg, mod, sample_cells, ns_rows, hs_rows)
            cells.extend(sample_cells)
    return DenseModel(
        par_names=names,
        poi=poi,
        nbins=nbins,
        init=np.asarray(cfg.suggested_init(), float),
        lo=np.asarray([b[0] for b in cfg.suggested_bounds()], float),
        hi=np.asarray([b[1] for b in cfg.suggested_bounds()], float),
        fixed=np.asarray(cfg.suggested_fixed(), bool),
        gauss=gauss,
        pois=pois,
        sigma=sigma,
        aux=aux,
        obs=obs,
        ns_par=np.asarray(sorted(ns_rows, key=ns_rows.get), int),
        hs_par=np.asarray(sorted(hs_rows, key=hs_rows.get), int),
        ns_code=ns_code,
        hs_code=hs_code,
        cells=_pack(cells, len(ns_rows), len(hs_rows), npar),
        names={i: c["name"] for i, c in enumerate(cells)},
    )


def _add_modifier(cfg, mod: dict, cells: list[dict], ns_rows: dict, hs_rows: dict) -> None:
    kind, name = mod["type"], mod["name"]
    if kind not in SUPPORTED:
        raise Unsupported(f"modifier type {kind!r}")
    start = cfg.par_slice(name).start
    data = mod.get("data")
    for j, cell in enumerate(cells):
        if kind in ("normfactor", "lumi"):
            cell["mult"].append(start)
        elif kind == "shapefactor":
            cell["mult"].append(start + j)
        elif kind == "staterror":
            if cell["st"] is not None:
                raise Unsupported("two staterror modifiers on one sample")
            cell["mult"].append(start + j)
            cell["st"] = (start + j, float(data[j]))
        elif kind == "shapesys":
            if cell["sh"] is not None:
                raise Unsupported("two shapesys modifiers on one sample")
            cell["mult"].append(start + j)
            cell["sh"] = (start + j, float(data[j]))
        elif kind == "normsys":
            row = ns_rows.setdefault(start, len(ns_rows))
            if row in cell["ns"]:
                raise Unsupported(f"normsys {name!r} twice on one sample")
            cell["ns"][row] = (float(data["hi"]), float(data["lo"]))
        else:  # histosys
            row = hs_rows.setdefault(start, len(hs_rows))
            if row in cell["hs"]:
                raise Unsupported(f"histosys {name!r} twice on one sample")
            cell["hs"][row] = (float(data["hi_data"][j]), float(data["lo_data"][j]))


def _pack(cells: list[dict], nk: int, nkh: int, npar: int) -> RawCells:
    nc = len(cells)
    width = max([len(c["mult"]) for c in cells] + [1])
    raw = RawCells(
        nom=np.array([c["nom"] for c in cells], float),
        ns_hi=np.ones((nk, nc)),
        ns_lo=np.ones((nk, nc)),
        hs_hi=np.zeros((nkh, nc)),
        hs_lo=np.zeros((nkh, nc)),
        hs_on=np.zeros((nkh, nc)),
        st_d=np.zeros(nc),
        st_par=np.full(nc, -1),
        sh_d=np.zeros(nc),
        sh_par=np.full(nc, -1),
        mult=np.full((nc, width), npar),
        cbin=np.array([c["bin"] for c in cells], int),
    )
    shapesys_seen: set[int] = set()
    for i, c in enumerate(cells):
        for row, (hi, lo) in c["ns"].items():
            raw.ns_hi[row, i], raw.ns_lo[row, i] = hi, lo
        for row, (hi, lo) in c["hs"].items():
            raw.hs_hi[row, i], raw.hs_lo[row, i], raw.hs_on[row, i] = hi, lo, 1.0
        raw.mult[i, : len(c["mult"])] = c["mult"]
        if c["st"] is not None:
            raw.st_par[i], raw.st_d[i] = c["st"]
        if c["sh"] is not None:
            if c["sh"][0] in shapesys_seen:
                raise Unsupported("a shapesys modifier shared by several samples")
            shapesys_seen.add(c["sh"][0])
            raw.sh_par[i], raw.sh_d[i] = c["sh"]
    return raw


def static_part(raw: RawCells, npar: int, nbins: int, ns_par, all_rows: bool = False) -> dict:
    """Index tables of a cell group that never change with the patch numbers.

    ``mult`` [C, R] (multiplicative parameter slots, ``npar`` = the constant 1), ``cbin`` [C]
    (main-data bin of each cell) and ``cb`` [C, B] (its one-hot matrix: summing cell terms into
    bins is a matrix product, much faster than a scatter under ``vmap`` on CPU),
    ``st_idx``/``sh_idx`` [C] (staterror/shapesys parameter, ``npar`` where none), and the
    normsys of each cell as a padded list: ``ns_row`` [C, L] (row of ``raw.ns_hi``; ``K`` =
    padding, factor 1) and ``ns_pidx`` [C, L] (its parameter, ``npar`` for padding). Only rows
    that act on a cell (factors not both 1) are listed, unless ``all_rows`` (for cells whose
    factors come from the patch: any row may then act); ``ns_par`` [K] maps rows to parameters.
    """
    ns_par = np.asarray(ns_par, int)
    cb = np.zeros((len(raw.cbin), nbins))
    cb[np.arange(len(raw.cbin)), raw.cbin] = 1.0
    nk, nc = raw.ns_hi.shape
    act = np.ones((nk, nc), bool) if all_rows else (raw.ns_hi != 1.0) | (raw.ns_lo != 1.0)
    width = max(int(act.sum(axis=0).max(initial=0)), 1)
    ns_row = np.full((nc, width), nk)
    for c in range(nc):
        rows = np.flatnonzero(act[:, c])
        ns_row[c, : len(rows)] = rows
    ns_pidx = np.concatenate([ns_par, [npar]])[ns_row] if nk else np.full((nc, width), npar)
    return {
        "mult": np.asarray(raw.mult, int),
        "cbin": np.asarray(raw.cbin, int),
        "cb": cb,
        "st_idx": np.where(raw.st_par >= 0, raw.st_par, npar).astype(int),
        "sh_idx": np.where(raw.sh_par >= 0, raw.sh_par, npar).astype(int),
        "ns_row": ns_row,
        "ns_pidx": ns_pidx.astype(int),
    }


def raw_dict(raw: RawCells) -> dict:
    """The patchable raw arrays of a cell group as float arrays."""
    return {
        k: np.asarray(getattr(raw, k), float)
        for k in ("nom", "ns_hi", "ns_lo", "hs_hi", "hs_lo", "hs_on", "st_d", "sh_d")
    }


_PER_BIN = ("staterror", "shapesys", "shapefactor")


def spec_size(spec: dict) -> tuple[int, int, int, int]:
    """(main-data bins, parameters, cells, normsys + histosys rows) of a workspace dict, counted
    without building a model.

    >>> spec_size({"channels": [{"name": "SR", "samples": [
    ...     {"data": [1.0, 2.0], "modifiers": [{"name": "s", "type": "staterror", "data": [0.1, 0.1]},
    ...                                        {"name": "mu", "type": "normfactor", "data": None}]},
    ...     {"data": [3.0, 4.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}]}]})
    (2, 3, 4, 0)
    """
    nbins = ncells = 0
    pars: dict[str, int] = {}
    rows: set[tuple[str, str]] = set()
    for channel in spec.get("channels", []):
        samples = channel.get("samples", [])
        width = max((len(s.get("data", [])) for s in samples), default=0)
        nbins += width
        for sample in samples:
            ncells += len(sample.get("data", []))
            for mod in sample.get("modifiers", []):
                kind, name = mod.get("type"), str(mod.get("name"))
                size = width if kind in _PER_BIN else 1
                pars[name] = max(pars.get(name, 0), size)
                if kind in ("normsys", "histosys"):
                    rows.add((kind, name))
    return nbins, sum(pars.values()), ncells, len(rows)


def chunk_size(nbins: int, npars: int, ncells: int, nrows: int, budget_bytes: float = 1.0 * 2**30) -> int:
    """Points per compiled batch of the fast engine so that a batch stays within ``budget_bytes``.

    Per point three fits each keep about a dozen (normsys + histosys rows) x cells arrays (the
    interpolation terms and their linearisation) and a few Jacobians (bins x parameters) alive.

    >>> chunk_size(5, 119, 31, 115), chunk_size(44, 267, 264, 176)
    (512, 64)
    """
    per_point = 3 * 8 * (12 * nrows * ncells + 8 * nbins * npars) + 64 * 1024
    n = int(budget_bytes // per_point)
    for size in (1024, 512, 256, 128, 64, 32, 16, 8):
        if n >= size:
            return size
    return 8
