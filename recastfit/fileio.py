"""File helpers for untrusted inputs and durable outputs.

* Atomic writes: a reader (or a killed run) never sees a half-written file.
* Bounded reads: a file larger than its limit is refused before it is parsed; YAML aliases
  (the "billion laughs" bomb) are refused; deeply nested documents end in a named error.
* Containment: :func:`inside` checks that a path the tool creates or removes lies inside
  the folder it owns, after resolving links and ``..``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from recastfit.errors import InputError
from recastfit.limits import limit

__all__ = [
    "write_text_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
    "read_text_capped",
    "load_json_file",
    "load_yaml_file",
    "load_yaml_text",
    "inside",
    "load_yaml_documents",
    "ensure_inside",
]


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, then rename it into place."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path | str, obj: Any, *, indent: int = 1) -> None:
    """:func:`write_text_atomic` of ``obj`` as strict JSON (NaN and infinities are refused)."""
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False))


def read_text_capped(path: Path | str, *, limit_name: str = "max_input_bytes", what: str = "file") -> str:
    """The text of ``path``, refused (InputError naming the limit) when larger than the limit."""
    path = Path(path)
    cap = int(limit(limit_name))
    try:
        with open(path, "rb") as fh:
            blob = fh.read(cap + 1)
    except OSError as exc:
        raise InputError(str(path), None, f"cannot read the {what}: {exc.strerror or exc}") from None
    if len(blob) > cap:
        from recastfit.limits import LIMITS

        raise InputError(
            str(path),
            None,
            f"the {what} is larger than {cap} bytes (raise {LIMITS[limit_name].env} to allow it)",
        )
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), None, f"the {what} is not UTF-8 text ({exc.reason})") from None


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader with aliases refused: no expansion bombs, no shared mutable nodes."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases are not allowed (found *{event.anchor})", event.start_mark
            )
        return super().compose_node(parent, index)


def _parse_yaml(parse: Any, source: str) -> Any:
    """Run ``parse()``; a YAML error or runaway nesting becomes an InputError naming ``source``."""
    try:
        return parse()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(source, None, f"not valid YAML: {problem}{where}") from None
    except RecursionError:
        raise InputError(source, None, "not valid YAML: nested too deeply") from None


def load_yaml_text(text: str, source: str = "<yaml>") -> Any:
    """Parse YAML ``text`` safely (no tags, no aliases); InputError naming ``source`` on failure.

    >>> load_yaml_text("a: [1, 2]")
    {'a': [1, 2]}
    >>> load_yaml_text("a: &x [1]\\nb: *x", "c.yaml")
    Traceback (most recent call last):
    ...
    recastfit.errors.InputError: c.yaml: not valid YAML: YAML aliases are not allowed (found *x) (line 2)
    """
    return _parse_yaml(lambda: yaml.load(text, Loader=_NoAliasLoader), source)  # noqa: S506


def load_yaml_documents(text: str, source: str = "<yaml>") -> list[Any]:
    """Every document of a multi-document YAML ``text``, parsed like :func:`load_yaml_text`.

    >>> load_yaml_documents("a: 1\\n---\\nb: 2")
    [{'a': 1}, {'b': 2}]
    """
    return _parse_yaml(lambda: list(yaml.load_all(text, Loader=_NoAliasLoader)), source)  # noqa: S506


def load_yaml_file(path: Path | str, *, limit_name: str = "max_input_bytes", what: str = "file") -> Any:
    """:func:`read_text_capped` then :func:`load_yaml_text` (JSON is YAML, so this reads both)."""
    text = read_text_capped(path, limit_name=limit_name, what=what)
    if str(path).lower().endswith(".json"):
        return _json(text, str(path))
    return load_yaml_text(text, str(path))


def load_json_file(path: Path | str, *, limit_name: str = "max_input_bytes", what: str = "file") -> Any:
    """:func:`read_text_capped` then strict JSON (NaN/Infinity literals refused)."""
    return _json(read_text_capped(path, limit_name=limit_name, what=what), str(path))


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InputError(source, None, "not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise InputError(source, None, f"not valid JSON: {exc}") from None


def inside(path: Path | str, root: Path | str) -> bool:
    """True when ``path`` (resolved: links and ``..`` followed) lies in or at ``root``.

    >>> inside("/tmp/a/b/../c", "/tmp/a"), inside("/tmp/a/../b", "/tmp/a")
    (True, False)
    """
    p = Path(os.path.realpath(path))
    r = Path(os.path.realpath(root))
    return p == r or r in p.parents


def ensure_inside(path: Path | str, root: Path | str, *, what: str = "path") -> Path:
    """Return ``path`` when it lies inside ``root``; InputError otherwise (nothing is touched)."""
    if not inside(path, root):
        raise InputError(str(path), None, f"the {what} would lie outside {root}: refused")
    return Path(path)
