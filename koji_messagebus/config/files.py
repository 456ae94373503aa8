"""Reading a config-side file (the config itself, a password file) safely: regular files only,
size-limited, never blocking on a FIFO or a device."""

from __future__ import annotations

import os
import stat


class NotRegularFile(OSError):
    """A path that is a FIFO, a directory, a device or a socket (or a regular file too large)."""


class FileTooLarge(NotRegularFile):
    """A regular file larger than the reader's limit."""

    def __init__(self, size: int, limit: int):
        self.size, self.limit = size, limit
        super().__init__(f"is larger than {limit} bytes")


def read_regular_file(path: str, limit: int = 1 << 20) -> str:
    """The text of a regular file (UTF-8, a byte-order mark skipped).  Opened without blocking
    and checked with fstat first: a FIFO or a device would otherwise hang the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        mode, size = info.st_mode, info.st_size
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else \
                "not a regular file"
            raise NotRegularFile(f"is {kind}, not a regular file")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(max(len(data), size), limit)
    return data.decode("utf-8-sig")
