"""Poison strikes: which messages the broker choked on, remembered by message id.

Why by id and apart from the thread: an outbox row resent by a later drain must go straight to
quarantine, and a strike must count only against the one message the broker refuses, never
against every message of a broker-wide failure (see sender.py's docstring).
"""

from __future__ import annotations

from collections import OrderedDict

MAX_STRIKES = 3  # a suspect failing alone this often is given up as a poison message
STRIKE_MEMORY = 10000  # message ids whose strikes are remembered


class Strikes:
    """Strikes by message id, the oldest forgotten beyond STRIKE_MEMORY (under the sender's lock)."""

    def __init__(self, memory: int = STRIKE_MEMORY):
        self.memory = memory
        self._counts: OrderedDict[str, int] = OrderedDict()

    def get(self, msg_id: str, default: int = 0) -> int:
        return self._counts.get(msg_id, default)

    def strike(self, msg_id: str) -> int:
        """One more strike (the first unsettled when a connection died); returns its strikes."""
        strikes = self._counts.get(msg_id, 0) + 1
        self._counts[msg_id] = strikes
        self._counts.move_to_end(msg_id)
        while len(self._counts) > self.memory:
            self._counts.popitem(last=False)
        return strikes

    def forget(self, msg_id: str) -> None:
        """Settled: not a poison message after all."""
        self._counts.pop(msg_id, None)

    def failed_alone(self, msg_id: str, others_settled: bool) -> bool:
        """A suspect failed again alone on the quarantine's connection: True when it is given up.
        A strike counts only when the main connection settled others since its last try (the broker
        is fine and refuses this one message; a broker-wide problem strikes nobody)."""
        return others_settled and self.strike(msg_id) >= MAX_STRIKES
