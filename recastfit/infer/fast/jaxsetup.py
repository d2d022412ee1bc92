"""JAX set-up for the fast engine: float64 and a persistent compilation cache.

Compiling the batched fits of one model structure takes 10-80 s; JAX's persistent
compilation cache keeps the compiled programs on disk so that later processes (workers,
reruns) load them instead. The cache folder is

- ``$RECASTFIT_JAX_CACHE`` when set (``RECASTFIT_JAX_CACHE=off`` disables the cache),
- else ``<user cache dir>/recastfit/jax`` (``platformdirs.user_cache_dir("recastfit")``,
  e.g. ``~/.cache/recastfit/jax`` on Linux).

Entries are keyed by JAX on the program, the JAX/XLA version and the device, so a stale or
foreign entry is never used; the folder may be deleted at any time.

The subfolder ``exported/`` holds the traced programs themselves (``jax.export``, one file per
program and batch size, keyed by the model structure, ``mu_test``, argument shapes, the
jax/jaxlib versions, the backend and a hash of the ``recastfit/infer`` sources), so that a
later process skips tracing as well as compiling: see :mod:`recastfit.infer.fast.export_cache`.
Both follow ``RECASTFIT_JAX_CACHE``; to clear them, delete the folder (or ``exported/`` only).

>>> cache_dir({"RECASTFIT_JAX_CACHE": "off"}) is None
True
>>> str(cache_dir({"RECASTFIT_JAX_CACHE": "/tmp/x"}))
'/tmp/x'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["cache_dir", "configure", "ENV"]

ENV = "RECASTFIT_JAX_CACHE"
_DONE: list[Path | None] = []


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The persistent compilation cache folder, or None when disabled."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV, "").strip()
    if raw.lower() == "off":
        return None
    if raw:
        return Path(raw).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("recastfit")) / "jax"


def configure() -> Path | None:
    """Enable float64 and the persistent cache (once per process); returns the cache folder used."""
    if _DONE:
        return _DONE[0]
    import jax

    jax.config.update("jax_enable_x64", True)
    path = cache_dir()
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            path = None  # an unwritable cache only costs compile time
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _DONE.append(path)
    return path
