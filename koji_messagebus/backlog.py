"""In-memory backlog for when the outbox is off: messages the broker did not take are kept
(bounded) and sent first by the next request, so a short outage loses nothing."""

from __future__ import annotations

import threading
from collections import deque

from .wire import Outgoing


class MemoryBacklog:
    def __init__(self, limit: int):
        self.limit = limit
        self._items: deque[Outgoing] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def take(self) -> list[Outgoing]:
        """Remove and return everything, oldest first."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def put_back(self, messages: list[Outgoing]) -> list[Outgoing]:
        """Keep unsent messages (they go before newer ones); return those that did not fit."""
        with self._lock:
            self._items.extendleft(reversed(messages))
            overflow = []
            while len(self._items) > self.limit:
                overflow.append(self._items.popleft())  # the oldest go first
            return overflow
