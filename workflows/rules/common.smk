# The run's config, read and validated by recastfit before any rule runs; shared helpers.
import json
import re
from pathlib import Path

from recastfit.config import Config, RunConfig
from recastfit.errors import RecastfitError
from recastfit.hepdata.sources import local_source_path
from recastfit.signals.sources import recast_points as _recast_points
from recastfit.workflow_glue import CONFIG_NAME_KEY, clear_stale_lock, drop_outgrown_results, load_workflow_config

try:
    RUN, CONFIG_NAME = load_workflow_config(
        workflow.overwrite_configfiles or [],
        workflow.config_settings.config,
        "workflows/config/config.yaml",
    )
except RecastfitError as _err:
    raise WorkflowError(f"recastfit: invalid configuration: {_err}") from None
# jobs name the user's file in their messages; passed in the config, not as a param, so that running
# the same settings from another file (a copy, --configfile) reruns nothing
config[CONFIG_NAME_KEY] = CONFIG_NAME

if isinstance(RUN, RunConfig):
    CFGS = RUN.by_name()
elif isinstance(RUN, Config):
    CFGS = {RUN.analysis: RUN}
else:  # a scan-only config (rules/scan.smk): no grid analyses
    CFGS = {}
OUT = str(RUN.output if hasattr(RUN, "output") else RUN.out_dir.parent)
A = f"{OUT}/{{analysis}}"  # every per-analysis file lives under <output>/<analysis>/
STEP = "../scripts/step.py"
ENV = "../envs/recastfit.yaml"

clear_stale_lock(Path.cwd())  # locks left by a killed run (its pid is gone) are removed
for _cfg in CFGS.values():
    drop_outgrown_results(_cfg.results_dir)


wildcard_constraints:
    analysis="|".join(re.escape(n) for n in CFGS),


def section(name: str):
    """A config section as canonical JSON: a rule param, so that editing it reruns the rule."""
    return lambda wc: json.dumps(CFGS[wc.analysis].raw.get(name), sort_keys=True)


def local_inputs(*sources: str) -> list[str]:
    """The local paths among pallet/signal sources (URLs, DOIs and HEPData records are not inputs)."""
    paths = (local_source_path(s) for s in sources if "{" not in s)
    return [str(p) for p in paths if p is not None]


def all_contours() -> list[str]:
    files = [f"{OUT}/{name}/contour.{ext}" for name in CFGS for ext in ("json", "png")]
    if isinstance(RUN, RunConfig) and len(CFGS) > 1:
        files.append(f"{OUT}/overlay.png")
    return files


# -- recast points (signal.type: recast) --------------------------------------------------------
try:
    RECAST = {
        name: dict(
            _recast_points(cfg.signal, config_file=cfg.file, base_dir=Path.cwd(), parameters=cfg.parameters)
        )
        for name, cfg in CFGS.items()
        if cfg.signal.get("type") == "recast"
    }
except RecastfitError as _err:
    raise WorkflowError(f"recastfit: invalid recast points: {_err}") from None


def fetch_inputs(wc):
    return local_inputs(CFGS[wc.analysis].pallet_spec.source)


def signal_inputs(wc):
    cfg = CFGS[wc.analysis]
    if cfg.signal["type"] == "recast":
        return recast_yields(wc.analysis)
    # every local file the source reads (yields file, efficiency-map folder, cross sections, ...)
    return local_inputs(*(str(cfg.signal[k]) for k in ("path", "xsec", "slha") if cfg.signal.get(k)))


def fit_parts(wc):
    n = CFGS[wc.analysis].run.jobs
    return [f"{OUT}/{wc.analysis}/parts/{k}-of-{n}.json" for k in range(n)]


def recast_yields(analysis: str) -> list[str]:
    """The yields files of every recast point of ``analysis`` (input of the patches rule)."""
    return [f"{OUT}/{analysis}/yields/{point}.json" for point in RECAST.get(analysis, {})]


def _recast_spec_files(wc) -> list[str]:
    spec = Path(CFGS[wc.analysis].signal["spec"])
    return sorted(str(p) for p in spec.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", ".json"))
