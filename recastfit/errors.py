"""Errors that reach users: each names the file, the key and what was expected."""

from __future__ import annotations

__all__ = ["RecastfitError", "ConfigError", "InputError", "FetchError"]


class RecastfitError(Exception):
    """Base class: the CLI prints the message without a traceback and exits 2."""


class ConfigError(RecastfitError):
    """A configuration value is missing or has the wrong type/value."""

    def __init__(self, file: str, key: str, expected: str, got: object = None):
        self.file, self.key, self.expected, self.got = file, key, expected, got
        msg = f"{file}: key '{key}': expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        super().__init__(msg)


class InputError(RecastfitError):
    """An input file (workspace, patch, yields, map) is malformed or inconsistent."""

    def __init__(self, file: str, key: str | None, message: str):
        self.file, self.key = file, key
        where = f"{file}: {key}" if key else str(file)
        super().__init__(f"{where}: {message}")


class FetchError(RecastfitError):
    """A pallet could not be fetched, verified or extracted."""
