"""Replay: send again the outbox rows kept after sending ([outbox] keep), the same bytes with the
same message-id, so that a consumer that lost its queue gets them back and one that dedupes by
message-id is safe.  Pure helpers (times, topic patterns) and the SQL; the command is cli/replay.py."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from koji_messagebus.format.wire import Outgoing
from koji_messagebus.transaction.outbox import TABLE

_AGO = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A duration ago (`2h`, `30m`, `90` seconds) or an ISO time (`2026-12-04T17:00`, with or without
    an offset; without, local time), as an aware datetime.  ValueError names what is accepted."""
    now = now or dt.datetime.now(dt.timezone.utc)
    match = _AGO.fullmatch(text or "")
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration ago (2h, 30m, 90s, 1d) nor an ISO time "
                         "(2026-12-04T17:00 or 2026-12-04T17:00:00+00:00)") from None
    return when if when.tzinfo is not None else when.astimezone()


def topic_matcher(pattern: str) -> Callable[[str], bool]:
    """A routing-key test as a topic exchange binds: words split on `.`, `*` one word, `#` zero or more."""
    words = pattern.split(".")
    if not pattern or any(not w for w in words):
        raise ValueError(f"{pattern!r}: not a topic pattern (words separated by single dots, * and #)")
    return lambda key: topic_match(words, key.split("."))


def topic_match(pattern: list[str], key: list[str]) -> bool:
    """Word lists; `can[j]`: the pattern so far matches the first j words of the key."""
    can = [True] + [False] * len(key)
    for word in pattern:
        if word == "#":
            for j in range(1, len(key) + 1):
                can[j] = can[j] or can[j - 1]
        else:
            can = [False] + [can[j - 1] and (word == "*" or word == key[j - 1]) for j in range(1, len(key) + 1)]
    return can[len(key)]


@dataclass
class Kept:
    id: int
    stored: dt.datetime
    msg_type: str
    routing_key: str


def select_kept(cnx: Any, since: dt.datetime, until: dt.datetime | None) -> list[Kept]:
    """The sent rows kept in [since, until), oldest first (without their payloads)."""
    cur = cnx.cursor()
    cur.execute(f"SELECT id, stored, msg_type, routing_key FROM {TABLE} WHERE sent_at IS NOT NULL AND "
                "stored >= %(since)s" + (" AND stored < %(until)s" if until is not None else "") + " ORDER BY id",
                {"since": since, "until": until})
    return [Kept(*row) for row in cur.fetchall()]


def payloads(cnx: Any, ids: list[int], batch: int) -> Iterator[list[Outgoing]]:
    """The kept messages `ids`, in batches, in the order given."""
    cur = cnx.cursor()
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        cur.execute(f"SELECT id, msg_id, created, msg_type, routing_key, payload FROM {TABLE} WHERE id IN %(ids)s",
                    {"ids": tuple(chunk)})
        rows = {row[0]: Outgoing(row[1], row[2], row[3], row[4], bytes(row[5])) for row in cur.fetchall()}
        cnx.rollback()
        yield [rows[i] for i in chunk if i in rows]  # a row removed meanwhile (older than keep) is skipped
