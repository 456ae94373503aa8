"""The plugin's logger: `koji.plugin.messagebus`, so that the hub's logging config applies to it.

The hub's log lines carry no plugin name of their own, so each message is prefixed
"messagebus: " here, once, instead of in every call.  The prefix is part of the message
itself (`record.getMessage()`), so handlers, filters and tests see the same text as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

LOGGER_NAME = "koji.plugin.messagebus"
PREFIX = "messagebus: "


class PrefixedLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """A logger adapter that puts `PREFIX` in front of every message."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{PREFIX}{msg}", kwargs


log = PrefixedLog(logging.getLogger(LOGGER_NAME), {})
"""Use as `from .log import log`; `log.info("sent %d", n)` logs "messagebus: sent 1"."""


#: seconds between two lines of the same cause
CAUSE_INTERVAL = 60.0
#: causes remembered at most (they are names in the code, a few dozen; a bound all the same)
MAX_CAUSES = 256


@dataclass
class _Cause:
    said_at: float  # when the last line of this cause was written
    count: int = 0  # occurrences since then, not yet in a line
    level: int = logging.NOTSET
    text: str = ""
    args: tuple[Any, ...] = ()
    counted: str = ""


class _Line(NamedTuple):
    level: int
    text: str
    args: tuple[Any, ...]
    times: int
    counted: str
    seconds: float | None  # None: a first occurrence (no "in the last N s")


class CauseLog:
    """One line per cause per `interval`, with counts: the first occurrence is logged at once,
    later ones within the interval are only counted, and the next occurrence after it (or `flush`)
    logs one line for all of them.  Why: a locked table or a dead database repeats on every
    request of every process; one line a minute with a count says the same to an admin.

    Thread-safe; one dict look-up under a lock per occurrence; at most `max_causes` causes
    (beyond them an occurrence is logged as it comes, untracked).  `clock` is injectable for tests."""

    def __init__(self, interval: float = CAUSE_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 max_causes: int = MAX_CAUSES, logger: logging.LoggerAdapter | None = None):  # type: ignore[type-arg]
        self.interval = interval
        self.clock = clock
        self.max_causes = max_causes
        self.logger = logger if logger is not None else log
        self._causes: dict[str, _Cause] = {}
        self._lock = threading.Lock()
        self._due = float("inf")  # the earliest end of an interval with occurrences counted (flush)

    def log(self, cause: str, level: int, text: str, *args: Any, count: int = 1, counted: str = "") -> None:
        """One occurrence (or `count` of them) of `cause`; `text` % `args` says what happened.
        `counted` names what is counted, and every line then starts with the count ("request(s)
        sent directly" gives "1 request(s) sent directly: <text>", then "412 request(s) sent directly
        in the last 60 s: <text>"); without it the first line is the text alone and a summary ends
        with "(412 times in the last 60 s)"."""
        now = self.clock()
        with self._lock:
            entry = self._causes.get(cause)
            if entry is None:
                if len(self._causes) >= self.max_causes:
                    self._forget_quiet(now)
                if len(self._causes) < self.max_causes:
                    self._causes[cause] = _Cause(now)
                line = _Line(level, text, args, count, counted, None)
            else:
                entry.count += count
                entry.level, entry.text, entry.args, entry.counted = max(entry.level, level), text, args, counted
                if now - entry.said_at < self.interval:
                    self._due = min(self._due, entry.said_at + self.interval)
                    return
                quiet = entry.count == count  # nothing counted since the last line: a first occurrence again
                line = self._take(entry, now)
                if quiet:
                    line = line._replace(seconds=None)
        self._write(line)

    def flush(self, force: bool = False) -> None:
        """Write the summary of every cause whose interval is over (all of them with `force`, at
        process exit).  Cheap enough for every request: a clock read and a compare until one is due."""
        now = self.clock()
        if not force and now < self._due:
            return
        with self._lock:
            lines = [self._take(e, now) for e in self._causes.values()
                     if e.count and (force or now - e.said_at >= self.interval)]
            self._due = min((e.said_at + self.interval for e in self._causes.values() if e.count),
                            default=float("inf"))
        for line in lines:
            self._write(line)

    def reset(self) -> None:
        """Forget every cause (tests)."""
        with self._lock:
            self._causes.clear()
            self._due = float("inf")

    def _take(self, entry: _Cause, now: float) -> _Line:
        """Under the lock: the summary line of `entry`, which starts a new interval."""
        line = _Line(entry.level, entry.text, entry.args, entry.count, entry.counted, max(0.0, now - entry.said_at))
        entry.said_at, entry.count, entry.level = now, 0, logging.NOTSET
        return line

    def _forget_quiet(self, now: float) -> None:
        """Under the lock: drop the causes with nothing to say whose interval is over."""
        for name in [n for n, e in self._causes.items() if not e.count and now - e.said_at >= self.interval]:
            del self._causes[name]

    def _write(self, line: _Line) -> None:
        level, text, args, count, counted, seconds = line.level, line.text, line.args, line.times, line.counted, \
            line.seconds
        try:
            said = text % args if args else text
        except (TypeError, ValueError):  # a caller's format mistake must not hide the problem
            said = f"{text} {args!r}"
        if counted:
            self.logger.log(level, "%d %s%s: %s", count, counted, _in_the_last(seconds), said)
        elif seconds is None and count == 1:
            self.logger.log(level, "%s", said)
        else:
            self.logger.log(level, "%s (%d %s%s)", said, count, "time" if count == 1 else "times",
                            _in_the_last(seconds))


def _in_the_last(seconds: float | None) -> str:
    return "" if seconds is None else f" in the last {seconds:.0f} s"


CAUSES = CauseLog()
"""The process's cause log: `log_cause` writes through it; `flush_causes` from a tick and at exit."""


def log_cause(cause: str, level: int, text: str, *args: Any, count: int = 1, counted: str = "") -> None:
    """Log a recurring problem at most once per cause per minute, with counts (issue 18).

    `cause` groups the lines ("outbox-locked", "db-lost", ...); `text` % `args` is one occurrence
    (the latest one's text is in the summary line).  `count`: occurrences this call stands for
    (messages, say); `counted`: what is counted, for the summary ("requests sent directly")."""
    CAUSES.log(cause, level, text, *args, count=count, counted=counted)


def flush_causes(force: bool = False) -> None:
    """Write the counts of causes whose minute is over (`force`: all; at process exit)."""
    CAUSES.flush(force)
