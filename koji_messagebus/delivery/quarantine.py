"""Poison suspects, one at a time, on a connection of their own, so that the main stream goes on
without them (see sender.py's docstring for when a message becomes a suspect)."""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from koji_messagebus.delivery.publisher import Publisher
from koji_messagebus.delivery.ticket import Item

if TYPE_CHECKING:
    from koji_messagebus.delivery.sender import SenderThread

PROBE_FIRST = 0.1  # seconds before the first probe after the broker went down (the sender's too)
PROBE_MAX = 1.0  # the longest pause between probes (the sender's also capped by retry_interval)

class Quarantine:
    """Suspects, one at a time, on a connection of their own (a `Publisher`)."""

    def __init__(self, owner: SenderThread):
        self.owner = owner
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._publisher = Publisher(owner.config, owner.clock, owner._connect_for_quarantine)
        self._thread = threading.Thread(target=self._run, name="messagebus-quarantine", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._items)

    def first(self) -> Item | None:
        items = self._items
        return items[0] if items else None

    def items(self) -> list[Item]:
        with self._cond:
            return list(self._items)

    def put(self, item: Item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(2)
        self._publisher.close()

    def _run(self) -> None:
        pause = PROBE_FIRST
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._stopping)
                if self._stopping:
                    return
                item = self._items[0]
            self._publisher.breaker.success()  # the quarantine paces itself (below)
            result = self._publisher.send([item.msg])
            done = self.owner._quarantine_result(item, result)
            with self._cond:
                self._items.popleft()
                if not done:
                    self._items.append(item)
            if done:
                pause = PROBE_FIRST
                continue
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, pause)
            pause = min(pause * 2, PROBE_MAX)
