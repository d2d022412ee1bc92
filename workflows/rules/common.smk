# Config validation (before any rule runs) and shared helpers.
import json
import os
from pathlib import Path

import yaml

from recastfit.config import parse_config
from recastfit.errors import ConfigError

_CONFIG_FILES = [str(f) for f in getattr(workflow, "overwrite_configfiles", None) or []]
_CONFIG_NAME = _CONFIG_FILES[-1] if _CONFIG_FILES else "workflows/config/config.yaml"
try:
    CFG = parse_config(config, file=_CONFIG_NAME)
except ConfigError as _err:
    raise WorkflowError(f"recastfit: invalid configuration: {_err}") from None

R = str(CFG.results_dir)
QUIET = "--quiet" if config.get("quiet") or os.environ.get("RECASTFIT_QUIET") else ""

# The steps read the resolved config (defaults + --configfile + --config) from one file,
# rewritten only when its content changes so that it never triggers needless reruns.
RESOLVED_CONFIG = f"{R}/config.resolved.yaml"
_resolved = yaml.safe_dump(dict(config), sort_keys=True)
Path(R).mkdir(parents=True, exist_ok=True)
if not Path(RESOLVED_CONFIG).exists() or Path(RESOLVED_CONFIG).read_text() != _resolved:
    Path(RESOLVED_CONFIG).write_text(_resolved)


def is_local(source: str) -> bool:
    """A pallet or signal source on this machine (not a URL, DOI or HEPData record)."""
    if source.startswith("file://"):
        return True
    if "://" in source or source.startswith(("10.", "ins", "doi:")):
        return Path(source).exists()
    return True


def local_path(source: str) -> str:
    return source.removeprefix("file://")


def section_param(name: str) -> str:
    """A config section as canonical JSON: a rule param, so that editing it reruns the rule."""
    return json.dumps(config.get(name, {}), sort_keys=True)
