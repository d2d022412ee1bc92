"""A dependency-free progress line: done/total, rate and ETA; silent when quiet.

On a terminal the line is redrawn in place (at most every ``min_interval`` seconds); in a
log file (Snakemake ``log:``, CI) a plain line is written every ``log_interval`` seconds.

>>> import io
>>> buf = io.StringIO()
>>> with Progress(4, label="fit", stream=buf, min_interval=0) as bar:
...     bar.update(4)
>>> "4/4" in buf.getvalue()
True
>>> bar = Progress(None, label="fetching p.tar.gz", stream=io.StringIO(), amount=format_bytes)
>>> bar.update(3 << 20); bar.line().split("  ")[0]
'fetching p.tar.gz: 3.0 MiB'
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_duration", "format_bytes"]


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``, ``3 << 20 -> '3.0 MiB'``, ``12 -> '12 B'``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


def format_duration(seconds: float) -> str:
    """``75 -> '1m15s'``, ``3700 -> '1h01m'``; ``'?'`` for unknown."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts finished items (or bytes) against ``total``; ``update`` is cheap, redraws are throttled.

    ``total`` None means unknown (no percentage, no ETA). ``amount`` formats counts and rates
    (e.g. :func:`format_bytes` for downloads); by default they are plain numbers with ``unit``.
    """

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "",
        quiet: bool = False,
        stream: TextIO | None = None,
        min_interval: float = 0.5,
        log_interval: float = 30.0,
        unit: str = "pts",
        amount: Callable[[float], str] | None = None,
    ) -> None:
        self.known = total is not None
        self.total = max(0, int(total)) if total is not None else 0
        self.amount = amount
        self.label = label
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self.done = 0
        self.extra = ""
        self._t0 = time.monotonic()
        self._last = float("-inf")
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = min_interval if self._tty else max(min_interval, log_interval)
        self._drawn = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    @property
    def rate(self) -> float:
        """Items per second since the start."""
        el = self.elapsed
        return self.done / el if el > 0 else 0.0

    @property
    def eta(self) -> float:
        """Seconds left at the current rate (``nan`` before the first item)."""
        if not self.known:
            return float("nan")
        return (self.total - self.done) / self.rate if self.rate > 0 else float("nan")

    def line(self) -> str:
        if self.amount is not None:
            return self._amount_line(self.amount)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        head = f"{self.label}: " if self.label else ""
        tail = f"  {self.extra}" if self.extra else ""
        return (
            f"{head}{self.done}/{self.total} ({pct:5.1f}%)  {self.rate:.2f} {self.unit}/s  "
            f"elapsed {format_duration(self.elapsed)}  ETA {format_duration(self.eta)}{tail}"
        )

    def _amount_line(self, fmt: Callable[[float], str]) -> str:
        head = f"{self.label}: " if self.label else ""
        done = fmt(self.done)
        if self.known and self.total:
            done += f" / {fmt(self.total)} ({100.0 * self.done / self.total:.0f}%)"
        eta = f"  ETA {format_duration(self.eta)}" if self.known else ""
        tail = f"  {self.extra}" if self.extra else ""
        return f"{head}{done}  {fmt(self.rate)}/s  elapsed {format_duration(self.elapsed)}{eta}{tail}"

    def update(self, n: int = 1, *, extra: str | None = None) -> None:
        self.done += n
        if extra is not None:
            self.extra = extra
        now = time.monotonic()
        if now - self._last >= self._interval or (self.known and self.done >= self.total):
            self._last = now
            self._draw()

    def _draw(self, final: bool = False) -> None:
        if self.quiet:
            return
        if self._tty:
            self.stream.write("\r\x1b[2K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Final redraw (ends the terminal line)."""
        if self._tty and self._drawn:
            self._draw(final=True)
        elif not self._drawn and (self.total or not self.known):
            self._draw(final=True)

    def write(self, message: str) -> None:
        """Print a message above the progress line (no-op when quiet)."""
        if self.quiet:
            return
        if self._tty:
            self.stream.write("\r\x1b[2K")
        self.stream.write(message.rstrip("\n") + "\n")
        self.stream.flush()
        if self._tty and self._drawn:
            self._draw()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
