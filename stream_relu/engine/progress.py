"""Progress on stderr, one format for every long step: the passes (chunks) and the refinement (iterations).

On a terminal the line is rewritten in place; otherwise a log line (logger
``stream_relu``, level INFO) is emitted at most every ``interval`` seconds,
and always at the end.
"""

from __future__ import annotations

import logging
import math
import sys
import time

__all__ = ["Progress", "StepProgress"]

log = logging.getLogger("stream_relu")


class _ProgressLine:
    """The throttled, in-place-on-a-terminal line both progress kinds write."""

    def __init__(self, label, *, enabled=True, interval=5.0, stream=None):
        self.label = label
        self.enabled = enabled
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.last = -math.inf

    def _due(self, final):
        """Whether a line is due now (always for the final one); marks it written."""
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last < (0.2 if self.tty else self.interval)):
            return False
        self.last = now
        return True

    def _write(self, line, final):
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
            self.stream.flush()
        else:
            log.info(line)


class Progress(_ProgressLine):
    """Chunks done / total, rows per second and time left of a pass."""

    def __init__(self, label, total_chunks, total_rows, *, enabled=True, interval=5.0, stream=None):
        super().__init__(label, enabled=enabled, interval=interval, stream=stream)
        self.total_chunks = total_chunks
        self.total_rows = total_rows
        self.done_chunks = 0
        self.done_rows = 0

    def skip(self, chunks, rows):
        """Count chunks reused from a checkpoint as done (rates cover new work only)."""
        self.done_chunks += chunks
        self.total_rows -= rows
        if chunks:
            log.info("%s: reusing %d of %d chunks from the state folder", self.label, chunks, self.total_chunks)

    def update(self, rows):
        """Count one more chunk of ``rows`` rows done; report when due."""
        self.done_chunks += 1
        self.done_rows += rows
        final = self.done_chunks == self.total_chunks
        if not self._due(final):
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done_rows / elapsed
        left = (self.total_rows - self.done_rows) / rate if rate > 0 else float("inf")
        line = (
            f"{self.label}: {self.done_chunks}/{self.total_chunks} chunks, "
            f"{rate:,.0f} rows/s, {elapsed:.1f} s elapsed, {left:.1f} s left"
        )
        self._write(line, final)


class StepProgress(_ProgressLine):
    """Iterations of a step that is not a pass over chunks (the refinement), in the same format.

    ``update(done, detail)`` reports ``label: done/total iterations (at
    most), detail, t s elapsed`` when due; ``finish(detail)`` always reports.
    """

    def __init__(self, label, total, *, unit="iterations", enabled=True, interval=5.0, stream=None):
        super().__init__(label, enabled=enabled, interval=interval, stream=stream)
        self.total = total
        self.unit = unit

    def update(self, done, detail):
        """Report ``done`` steps so far (throttled)."""
        if self._due(final=False):
            self._emit(f"{done}/{self.total} {self.unit} (at most), {detail}", final=False)

    def finish(self, detail):
        """Report the end of the step."""
        if self._due(final=True):
            self._emit(detail, final=True)

    def _emit(self, text, final):
        self._write(f"{self.label}: {text}, {time.perf_counter() - self.start:.1f} s elapsed", final)
