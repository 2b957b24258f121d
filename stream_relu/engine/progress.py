"""Progress of a pass on stderr: chunks done, rows per second, time left."""

from __future__ import annotations

import logging
import math
import sys
import time

__all__ = ["Progress"]

log = logging.getLogger("stream_relu")


class Progress:
    """Chunks done / total, rows per second and time left, on stderr.

    On a terminal the line is rewritten in place; otherwise a log line is
    emitted at most every ``interval`` seconds (and at the end).
    """

    def __init__(self, label, total_chunks, total_rows, *, enabled=True, interval=5.0, stream=None):
        self.label = label
        self.total_chunks = total_chunks
        self.total_rows = total_rows
        self.enabled = enabled
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done_chunks = 0
        self.done_rows = 0
        self.start = time.perf_counter()
        self.last = -math.inf

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
        now = time.perf_counter()
        final = self.done_chunks == self.total_chunks
        if not self.enabled or (not final and now - self.last < (0.2 if self.tty else self.interval)):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done_rows / elapsed
        left = (self.total_rows - self.done_rows) / rate if rate > 0 else float("inf")
        line = (
            f"{self.label}: {self.done_chunks}/{self.total_chunks} chunks, "
            f"{rate:,.0f} rows/s, {elapsed:.1f} s elapsed, {left:.1f} s left"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
            self.stream.flush()
        else:
            log.info(line)
