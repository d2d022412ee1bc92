"""Traced programs kept on disk (``jax.export``), so a new process neither traces nor compiles.

JAX's persistent compilation cache (:mod:`recastfit.infer.fast.jaxsetup`) saves the XLA
compilation, but every process still traces and lowers the batched fits in Python (3-4 s on
the stau structure). :class:`Programs` removes that too: the first call of a program with
given argument shapes exports it (``jax.export``: the traced, lowered StableHLO module) and
writes the serialized ``Exported`` to ``<compilation cache>/exported/``; a later process
deserializes it and calls it under ``jax.jit``, and since that lowers to the same module, XLA
compilation hits the persistent cache as well.

What is stored: one file per (program, argument shapes), ``<name>-<key>.jaxexp``: a magic
line, the SHA-256 of key + payload, then the payload (``Exported.serialize()``, a flatbuffer
holding the StableHLO bytecode; no pickle anywhere).

Key (SHA-256 of all of it): the program name; the owner's state at the time the programs are
made (every Python scalar and string in it by value, every array by shape and dtype: see
:func:`fingerprint`; for the fast engine's ``Runner`` that is the model structure, ``mu_test``,
the iteration budget and the interpolation codes); the argument tree and each argument's shape
and dtype; jax and jaxlib versions, the backend, the float64 flag; a hash of the source of
``recastfit/infer/**/*.py`` (any edit there invalidates every entry); this module's format.
Array *values* are not in the key: programs must take every array as an argument (the
``Runner`` rule), never bake one in as a constant.

A file that is unreadable, not a regular file, truncated, foreign, stored under another key,
that does not match the call or cannot be compiled is ignored (counted in ``STATS["rejected"]``)
and the program is traced again and rewritten; files are written atomically (temporary file +
rename). The checksum detects damage, not tampering: the folder is trusted as much as the XLA
cache beside it (which holds native code), i.e. it must be the user's own. The cache follows the
compilation cache: ``RECASTFIT_JAX_CACHE=DIR`` moves both, ``RECASTFIT_JAX_CACHE=off``
disables both (programs are then plain ``jax.jit``); delete ``<cache>/exported`` (or the whole
cache folder) at any time to clear it.

>>> fingerprint({"mu": 1.0, "a": __import__("numpy").zeros((2, 3))}) == fingerprint(
...     {"a": __import__("numpy").ones((2, 3)), "mu": 1.0})
True
>>> fingerprint({"mu": 1.0}) == fingerprint({"mu": 2.0})
False
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import stat
import types
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from recastfit.fileio import write_bytes_atomic

__all__ = [
    "available",
    "Programs",
    "CachedProgram",
    "STATS",
    "SUBDIR",
    "MAGIC",
    "fingerprint",
    "source_digest",
]

log = logging.getLogger(__name__)

MAGIC = b"recastfit-exported-v1\n"
SUBDIR = "exported"
MAX_FILE_BYTES = 64 * 2**20  # an exported stau program is ~130 kB; larger files are not ours
STATS = {"loaded": 0, "exported": 0, "rejected": 0, "unexportable": 0}
_INFER = Path(__file__).resolve().parents[1]  # recastfit/infer


@lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of every ``recastfit/infer/**/*.py`` (relative path and content)."""
    h = hashlib.sha256()
    for path in sorted(_INFER.rglob("*.py")):
        h.update(path.relative_to(_INFER).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def fingerprint(obj: Any) -> str:
    """Stable digest of ``obj``: scalars and strings by value, arrays by shape and dtype only.

    Containers, dataclasses and plain objects are walked (shared references once); anything
    else contributes its type and ``repr`` (an address in it only costs a cache miss).
    """
    h = hashlib.sha256()
    _walk(obj, h, {})
    return h.hexdigest()


def _walk(obj: Any, h, seen: dict[int, int]) -> None:
    put = h.update
    if obj is None or isinstance(obj, bool | int | float | complex | str | bytes | np.generic):
        put(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # numpy and jax arrays
        put(f"array:{tuple(obj.shape)}:{np.dtype(obj.dtype).str};".encode())
        return
    if id(obj) in seen:
        put(f"ref:{seen[id(obj)]};".encode())
        return
    seen[id(obj)] = len(seen)
    put(f"{type(obj).__module__}.{type(obj).__qualname__}(".encode())
    if isinstance(obj, dict):
        for key in sorted(obj, key=repr):
            _walk(key, h, seen)
            _walk(obj[key], h, seen)
    elif isinstance(obj, list | tuple):
        for item in obj:
            _walk(item, h, seen)
    elif isinstance(obj, set | frozenset):
        for item in sorted(obj, key=repr):
            _walk(item, h, seen)
    elif is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            put(f.name.encode() + b"=")
            _walk(getattr(obj, f.name), h, seen)
    elif isinstance(obj, types.ModuleType):
        put(obj.__name__.encode())
    elif callable(obj) and hasattr(obj, "__qualname__"):
        put(f"{getattr(obj, '__module__', '')}.{obj.__qualname__}".encode())
    elif hasattr(obj, "__dict__"):
        for name in sorted(vars(obj)):
            put(name.encode() + b"=")
            _walk(vars(obj)[name], h, seen)
    else:
        put(repr(obj).encode())
    put(b");")


def _environment() -> str:
    import jax
    import jaxlib

    return (
        f"{MAGIC!r}|jax={jax.__version__}|jaxlib={jaxlib.__version__}|backend={jax.default_backend()}"
        f"|x64={bool(jax.config.jax_enable_x64)}|src={source_digest()}"
    )


def _as_array(x: Any) -> Any:
    """Python scalars become numpy scalars so that export and call see the same (strong) dtype."""
    return np.asarray(x) if isinstance(x, bool | int | float | complex) else x


def _read_regular(path: Path) -> bytes:
    """Bytes of a regular file of at most ``MAX_FILE_BYTES`` (a FIFO or device is refused, unread)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)


class CachedProgram:
    """``jax.jit(fun)`` whose traced program is exported to / loaded from ``folder``."""

    def __init__(self, name: str, fun: Callable, base: str, folder: Path):
        import jax

        self.name, self._fun, self._base, self._folder = name, fun, base, folder
        self._jit = jax.jit(fun)
        self._calls: dict = {}  # (tree, shapes/dtypes) -> callable

    def __call__(self, *args: Any) -> Any:
        import jax

        flat, tree = jax.tree_util.tree_flatten(args)
        flat = [_as_array(x) for x in flat]
        # as jax sees them (float64 arrays are float32 without x64)
        canonical = jax.dtypes.canonicalize_dtype
        spec = (tree, tuple((tuple(np.shape(x)), np.dtype(canonical(x.dtype)).str) for x in flat))
        call = self._calls.get(spec)
        if call is None:
            call = self._calls[spec] = self._prepare(spec, jax.tree_util.tree_unflatten(tree, flat))
        return call(*jax.tree_util.tree_unflatten(tree, flat))

    def _cache_size(self) -> int:
        """Programs compiled so far (one per argument spec), like ``jax.jit(...)._cache_size()``."""
        unique = {id(c): c for c in self._calls.values()}.values()
        return sum(c._cache_size() if hasattr(c, "_cache_size") else 1 for c in unique)

    def path(self, spec) -> tuple[Path, str]:
        """(file, key) of the program for one argument spec."""
        key = hashlib.sha256(f"{self._base}|{self.name}|{spec[0]}|{spec[1]}".encode()).hexdigest()
        return self._folder / f"{self.name}-{key[:40]}.jaxexp", key

    def _prepare(self, spec, args: tuple) -> Callable:
        import jax

        path, key = self.path(spec)
        exp = self._load(path, key, spec)
        loaded = exp is not None
        if exp is None:
            try:
                blob = bytes(jax.export.export(self._jit)(*args).serialize())
                # call what a later process will load: the same module, so the same XLA cache entry
                exp = jax.export.deserialize(bytearray(blob))
            except Exception as exc:  # noqa: BLE001 - a program that cannot be exported still runs
                STATS["unexportable"] += 1
                log.warning("fast engine: program %s not exported (%s); tracing it each process", path, exc)
                return self._jit
            STATS["exported"] += 1
            log.debug("fast engine: exported program %s", path)
            digest = hashlib.sha256(key.encode() + blob).hexdigest().encode()
            try:
                write_bytes_atomic(path, MAGIC + digest + b"\n" + blob)
            except OSError as exc:
                log.info("fast engine: cannot write %s (%s)", path, exc)
        try:  # compiled here (XLA cache hit when warm) so that a program that cannot be run is caught
            return jax.jit(exp.call).lower(*args).compile()
        except Exception as exc:  # noqa: BLE001 - fall back to tracing, as without a cache
            if loaded:
                return self._reject(path, f"cannot be compiled: {exc}") or self._jit
            STATS["unexportable"] += 1
            log.warning("fast engine: exported program %s cannot be compiled (%s); tracing it", path, exc)
            return self._jit

    def _load(self, path: Path, key: str, spec):
        """The stored ``Exported`` for ``key``, or None (missing, corrupt, foreign or not matching)."""
        import jax

        try:
            raw = _read_regular(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return self._reject(path, f"unreadable: {exc}")
        head, sep, rest = raw[len(MAGIC) :].partition(b"\n")
        if not raw.startswith(MAGIC) or not sep:
            return self._reject(path, "not a recastfit exported program")
        if hashlib.sha256(key.encode() + rest).hexdigest().encode() != head:
            return self._reject(path, "checksum does not match its key")
        try:
            exp = jax.export.deserialize(bytearray(rest))
            tree, avals = spec
            got = tuple((tuple(a.shape), np.dtype(a.dtype).str) for a in exp.in_avals)
            args = jax.tree_util.tree_unflatten(tree, [0] * tree.num_leaves)
            want = jax.tree_util.tree_structure((args, {}))  # exported: (args, kwargs)
            if exp.in_tree != want or got != avals:
                return self._reject(path, "arguments do not match")
        except Exception as exc:  # noqa: BLE001 - whatever is in the file, never trust it
            return self._reject(path, f"cannot be deserialized: {exc}")
        STATS["loaded"] += 1
        log.debug("fast engine: loaded exported program %s", path)
        return exp

    @staticmethod
    def _reject(path: Path, why: str) -> None:
        STATS["rejected"] += 1
        log.warning("fast engine: ignoring cached program %s: %s", path, why)
        return None


def available() -> bool:
    """Whether ``jax.export`` can serialize here (it needs the ``flatbuffers`` package)."""
    return importlib.util.find_spec("flatbuffers") is not None


@lru_cache(maxsize=1)
def _register_outputs() -> None:
    """Let ``jax.export`` serialize the engine's named-tuple outputs (once per process)."""
    import jax

    from recastfit.infer.fast.newton import FitOut

    jax.export.register_namedtuple_serialization(FitOut, serialized_name="recastfit.infer.fast.newton.FitOut")


class Programs:
    """Factory of jitted programs for one owner (the fast engine's ``Runner``).

    ``Programs(owner).jit(name, fun)`` is ``jax.jit(fun)`` when the cache is off, else a
    :class:`CachedProgram` keyed by the owner's :func:`fingerprint` taken now.
    """

    def __init__(self, owner: Any, folder: Path | None | str = "default"):
        from recastfit.infer.fast.jaxsetup import configure

        _register_outputs()
        root = configure() if folder == "default" else folder
        if root is not None and not available():
            log.info("fast engine: 'flatbuffers' is not installed: programs are traced in every process")
            root = None
        self.folder = None if root is None else Path(root) / SUBDIR
        self.base = "" if self.folder is None else f"{_environment()}|{fingerprint(vars(owner))}"

    def jit(self, name: str, fun: Callable) -> Callable:
        import jax

        if self.folder is None:
            return jax.jit(fun)
        return CachedProgram(name, fun, self.base, self.folder)
