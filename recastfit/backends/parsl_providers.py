"""Parsl providers by config name, and the check of ``backend.provider_options`` against them.

Kept apart from :mod:`recastfit.backends.parsl_backend` so that config loading can check the
options without importing the back end (and without an import cycle through ``base``).
"""

from __future__ import annotations

import inspect
from typing import Any

from recastfit.errors import ConfigError

__all__ = ["check_provider_options", "provider_class"]


def provider_class(name: str) -> type:
    """The Parsl provider class for ``backend.parsl_provider`` (imported only when asked for)."""
    if name == "local":
        from parsl.providers import LocalProvider

        return LocalProvider
    if name == "slurm":
        from parsl.providers import SlurmProvider

        return SlurmProvider
    if name == "htcondor":
        from parsl.providers import CondorProvider

        return CondorProvider
    raise ConfigError("config.yaml", "backend.parsl_provider", "one of local, slurm, htcondor", name)


def check_provider_options(name: str, options: dict[str, Any], *, file: str = "config.yaml") -> None:
    """Raise :class:`ConfigError` for a key that is not an argument of the Parsl provider ``name``."""
    cls = provider_class(name)
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for key in options:
        if key not in allowed:
            raise ConfigError(
                file,
                f"backend.provider_options.{key}",
                f"an argument of parsl {cls.__name__} ({', '.join(sorted(allowed))})",
                key,
            )
