"""A progress line on stderr for long commands (outbox flush)."""

from __future__ import annotations

import sys
import time

from koji_messagebus.cli.common import err


class Progress:
    """'label: 120/500' on stderr, rewritten in place on a terminal, every ~0.5 s otherwise."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.tty = sys.stderr.isatty()
        self._last = 0.0
        self.count = 0
        self._shown = -1
        if not self.tty:
            err(f"{label}: {total} row(s)")

    def update(self, count: int) -> None:
        now = time.monotonic()
        self.count = count
        if self.tty:
            sys.stderr.write(f"\r{self.label}: {count}/{self.total}")
            sys.stderr.flush()
        elif now - self._last >= 0.5:
            err(f"{self.label}: {count}/{self.total}")
            self._last = now
            self._shown = count

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
        elif self._shown != self.count:
            err(f"{self.label}: {self.count}/{self.total}")
            self._shown = self.count
