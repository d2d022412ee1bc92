"""recastfit: reinterpretation of published LHC likelihoods with new signal models."""

from recastfit.errors import ConfigError, FetchError, InputError, RecastfitError
from recastfit.results import FitSettings, HypotestResult, PatchTask

__all__ = [
    "ConfigError",
    "FetchError",
    "FitSettings",
    "HypotestResult",
    "InputError",
    "PatchTask",
    "RecastfitError",
]
__version__ = "0.1.0"
