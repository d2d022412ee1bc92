"""One rule for analysis and point names, which become file and folder names.

A name starts with a letter or digit, continues with letters, digits, ``_ . + -``, holds no
``..`` and is at most ``max_name_length`` characters (see :mod:`recastfit.limits`). Nothing
else is accepted: such a name can never climb out of a folder, start an option, or carry
shell syntax.

>>> is_valid_name("TStauStau_280_120"), is_valid_name("../victim"), is_valid_name("x$(touch y)")
(True, False, False)
>>> check_name("demo_500_100", file="grid.json", key="points[0].name")
'demo_500_100'
"""

from __future__ import annotations

import re

from recastfit.errors import ConfigError, InputError
from recastfit.limits import limit

__all__ = ["NAME_PATTERN", "is_valid_name", "check_name", "name_problem"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
_NAME_RE = re.compile(NAME_PATTERN)


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid name, or None when it is."""
    if not isinstance(name, str):
        return f"a string, not {type(name).__name__}"
    if not name:
        return "a non-empty name"
    cap = int(limit("max_name_length"))
    if len(name) > cap:
        return f"at most {cap} characters (got {len(name)})"
    if not _NAME_RE.match(name) or not name.isascii():
        return "letters, digits and '_.+-' only, starting with a letter or digit"
    if ".." in name:
        return "no '..'"
    return None


def is_valid_name(name: object) -> bool:
    """True when ``name`` is a valid analysis or point name."""
    return name_problem(name) is None


def check_name(name: object, *, file: str, key: str, config: bool = False) -> str:
    """Return ``name`` or raise (:class:`ConfigError` if ``config`` else :class:`InputError`)."""
    problem = name_problem(name)
    if problem is None:
        return name  # type: ignore[return-value]
    expected = f"a name made of {problem}" if problem.startswith("letters") else problem
    if config:
        raise ConfigError(file, key, expected, _shown(name))
    raise InputError(file, key, f"expected {expected}, got {_shown(name)!r}")


def _shown(name: object) -> object:
    """A short, printable form of a rejected value (hostile names may be huge)."""
    text = name if isinstance(name, str) else repr(name)
    return text if len(text) <= 80 else text[:77] + "..."
