"""Give the heap a large backlog used back to the system once the backlog is gone.

Why: after an outage a process holds thousands of messages (payloads, items, proton's buffers).
CPython frees them, but glibc keeps the freed heap mapped, so the process stayed 25-70 MiB bigger
for good (issue 18: memory returns to its level before the fault).  `malloc_trim(0)` hands it back.
Once per backlog, on the sender thread, only after one of at least TRIM_AFTER messages; a no-op
where the C library has no malloc_trim (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_AFTER = 1000  # messages held at the peak that make a trim worth its few milliseconds
LOW = 64  # the backlog counts as gone at this many (under load a few are always in flight)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


class HeapTrim:
    """Follows the messages held; trims once they fall to LOW or fewer after a peak of TRIM_AFTER or more."""

    def __init__(self, trim: Callable[[int], int] | None = None, after: int = TRIM_AFTER, low: int = LOW):
        self._trim = trim if trim is not None else _malloc_trim()
        self._after = after
        self._low = low
        self.peak = 0
        self.trims = 0

    def note(self, held: int) -> None:
        if held > self.peak:
            self.peak = held
        elif held <= self._low and self.peak >= self._after:
            self.peak = 0
            if self._trim is not None:
                self._trim(0)
                self.trims += 1
        elif held <= self._low:
            self.peak = held
