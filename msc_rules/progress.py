"""The progress display of the `msc-rules` command: one line on stderr, redrawn in place,
only when stderr is a terminal (nothing at all when it is a file or a pipe, or with
--quiet).

The line shows a bar, the stage counter, what is being done, how much of it (counts
such as "20,007 bindings") and the time the stage has taken so far:

    [##########..........] 2/4 inferring layouts · 20,007 bindings · 0:03

The bar fills with the stages of the run, or, inside a stage that counts its items
(`items`), with the items done. A background thread redraws the line a few times a
second, so the time moves during long stages that report nothing (a frontend import,
the propagation).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, TextIO

_WIDTH = 20
_TICK = 0.2  # seconds between redraws of the clock
_MIN_REDRAW = 0.05  # at most 20 redraws a second from item counts


class Progress:
    """Stage messages and a bar on stderr, only when stderr is a terminal."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None,
                 stages: int = 0) -> None:
        self.stream = stream or _terminal()
        self.enabled = not quiet and _isatty(self.stream)
        self.stages = stages  # the stages the run expects (grows when more come)
        self.index = 0
        self.label = ""
        self.units = ""
        self.count: tuple[int, int, str] | None = None
        self.since = time.monotonic()
        self.last = 0.0
        self.shown = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def stage(self, text: str, units: str = "") -> None:
        """Start the next stage: `text` is what is done, `units` how much (optional;
        kept from the stage before when not given, e.g. the model's bindings)."""
        if not self.enabled:
            return
        with self._lock:
            self.index += 1
            self.stages = max(self.stages, self.index)
            self.label = text
            if units:
                self.units = units
            self.count = None
            self.since = time.monotonic()
            self._draw()
        self._start_ticker()

    def measure(self, units: str) -> None:
        """Say how much the current and later stages work on ("20,007 bindings")."""
        if self.enabled:
            with self._lock:
                self.units = units
                self._draw()

    def bar(self, done: int, total: int, label: str = "") -> None:
        """Items done of a counted stage: the bar fills with `done / total`."""
        if not self.enabled or total <= 0:
            return
        with self._lock:
            self.count = (done, total, label)  # the clock's redraws show it too
            if time.monotonic() - self.last >= _MIN_REDRAW or not 0 < done < total - 1:
                self._draw()

    def items(self, done: int, total: int, what: str) -> None:
        """bar() for a stage's own items, e.g. items(12, 40, "examples")."""
        self.bar(done, total, what)

    def line(self) -> str:
        """The text of the progress line as it would be drawn now."""
        elapsed = _clock(time.monotonic() - self.since)
        if self.count is not None:
            done, total, label = self.count
            fill = int(_WIDTH * done / total)
            head = f"[{'#' * fill}{'.' * (_WIDTH - fill)}] {done:,}/{total:,}"
            parts = [head + (f" {label}" if label else ""), self.label]
        else:
            stages = max(self.stages, 1)
            fill = int(_WIDTH * (self.index - 1) / stages)
            parts = [f"[{'#' * fill}{'.' * (_WIDTH - fill)}] {self.index}/{stages} {self.label}"]
        if self.units:
            parts.append(self.units)
        parts.append(elapsed)
        return " · ".join(p for p in parts if p)

    def _draw(self) -> None:
        self.last = time.monotonic()
        self.stream.write("\r\033[K" + self.line()[:120])
        self.stream.flush()
        self.shown = True

    def _start_ticker(self) -> None:
        if self._ticker is not None:
            return
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="msc-rules-progress",
                                        daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(_TICK):
            with self._lock:
                if self.shown:
                    try:
                        self._draw()
                    except (OSError, ValueError):  # the terminal went away
                        return

    def done(self) -> None:
        """Stop the clock and erase the line."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            self._stop.set()
            ticker.join()
        if self.enabled and self.shown:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self.shown = False


def _terminal() -> TextIO:
    """stderr, through a descriptor of its own when it is a terminal: loading a model
    redirects descriptor 2 for a while to filter TVM's native warnings (models.py), and
    the clock must keep moving meanwhile."""
    import sys

    stream = sys.stderr
    if not _isatty(stream):
        return stream
    try:
        return os.fdopen(os.dup(stream.fileno()), "w", encoding="utf-8", errors="replace")
    except (OSError, ValueError, AttributeError):
        return stream


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def count_bindings(mod: Any) -> int:
    """Bindings in the blocks of the module's Relax functions (nested ones not counted)."""
    total = 0
    for func in mod.functions.values():
        body = getattr(func, "body", None)
        for block in getattr(body, "blocks", ()):
            total += len(block.bindings)
    return total


__all__ = ["Progress", "count_bindings"]
