# Preserved-analysis re-runs: one `yadage-run` per grid point (signal.type == "recast").
# Each job runs the spec in its own work dir, {R}/recast/{point}/, and writes {R}/yields/{point}.json
# (or signal.yields_dir/{point}.json); `snakemake --cores N` runs N points at once. The patches rule
# consumes every point's yields file through recast_yields().
import re as _re

from recastfit.signals.sources import recast_points as _recast_points


def _recast_section() -> dict:
    return CFG.signal if CFG.signal.get("type") == "recast" else {}


def _recast_yields_dir() -> str:
    ydir = _recast_section().get("yields_dir")
    return str(ydir).rstrip("/") if ydir else f"{R}/yields"


RECAST_POINTS = (
    dict(_recast_points(CFG.signal, config_file=CFG.file, base_dir=Path.cwd(), parameters=CFG.parameters))
    if _recast_section()
    else {}
)


def recast_yields() -> list[str]:
    """The yields files of every recast point (input of the patches rule)."""
    return [f"{_recast_yields_dir()}/{name}.json" for name in RECAST_POINTS]


def _recast_spec_files(wildcards) -> list[str]:
    spec = Path(_recast_section()["spec"])
    return sorted(str(p) for p in spec.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", ".json"))


def _recast_param() -> str:
    """Everything that changes the yields (the signal section less the patch options)."""
    return json.dumps({k: v for k, v in _recast_section().items() if k != "options"}, sort_keys=True)


if RECAST_POINTS:

    rule recast:
        """Run the preserved analysis (yadage spec signal.spec) for one grid point."""
        input:
            spec=_recast_spec_files,
        output:
            f"{_recast_yields_dir()}/{{point}}.json",
        params:
            signal=_recast_param(),
            workdir=lambda wc: f"{R}/recast/{wc.point}",
        log:
            f"{R}/logs/recast/{{point}}.log",
        wildcard_constraints:
            point="|".join(_re.escape(n) for n in RECAST_POINTS),
        shell:
            "recastfit {QUIET} recast --config {RESOLVED_CONFIG} --point {wildcards.point} "
            "--workdir {params.workdir} --out {output} > {log} 2>&1"
