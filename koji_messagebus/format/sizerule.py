"""The size rule: what happens to a message larger than `[message] max_size`.

Upstream's protonmsg has `extra_limit`: a build's `extra` map (free-form metadata that content
generators and tools fill, sometimes with megabytes) larger than the limit is dropped from the
build before the message is sent, because it is what makes Koji messages too large for brokers
and consumers, while the rest of the message stays useful and `extra` can be fetched from the
hub (getBuild).  protonmsg does it silently (a debug line) and only for builds, by `extra` size.

Ours, by the size of the whole encoded message: within `max_size` the message is sent as it is.
Above it, every `extra` map of the body's objects (`build.extra`, `info.extra`, `tag.extra`, ...
one and two levels deep) is dropped, the header `extra_dropped` names what went (`build.extra`),
and a WARNING names the type, routing key and both sizes.  A message still larger is not sent:
an ERROR names its type, routing key and size.  Nothing is ever cut in the middle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from koji_messagebus.format.messages import Event
from koji_messagebus.format.values import Conversions
from koji_messagebus.format.wire import Outgoing, Unsendable, encode
from koji_messagebus.log import log

HEADER = "extra_dropped"


def without_extra(event: Event) -> tuple[Event, list[str]]:
    """A copy of `event` without the `extra` maps of its body's objects (the original is not
    changed), and the dotted paths of what was dropped."""
    dropped: list[str] = []
    body: dict[str, Any] = {}
    for key, value in event.body.items():
        if isinstance(value, Mapping):
            value = _strip(value, str(key), dropped, depth=2)
        body[key] = value
    headers = dict(event.headers)
    if dropped:
        headers[HEADER] = ",".join(dropped)
    return Event(event.type, event.routing_key, headers, body, Conversions()), dropped


def _strip(obj: Mapping, path: str, dropped: list[str], depth: int) -> Any:
    copy: dict[Any, Any] = {}
    for key, value in obj.items():
        if key == "extra" and value:
            dropped.append(f"{path}.extra")
            continue
        if depth > 1 and isinstance(value, Mapping):
            value = _strip(value, f"{path}.{key}", dropped, depth - 1)
        copy[key] = value
    return copy


def encode_within(event: Event, to: str | None, max_size: int | None, ttl: float | None = None,
                  encoder: Callable[..., Outgoing] = encode) -> Outgoing:
    """Encode `event` (with `encoder`, wire.encode's signature) by the size rule (module docstring);
    Unsendable when it cannot be sent."""
    try:
        return encoder(event, to=to, limit=max_size, ttl=ttl)
    except Unsendable as exc:
        if max_size is None or not exc.too_large:
            raise
        first_size = exc.size
    smaller, dropped = without_extra(event)
    if not dropped:
        raise Unsendable(event.type, event.routing_key, first_size,
                         f"larger than [message] max_size = {max_size} bytes and no `extra` to drop")
    try:
        msg = encoder(smaller, to=to, limit=max_size, ttl=ttl)
    except Unsendable as exc:
        if not exc.too_large:
            raise
        raise Unsendable(event.type, event.routing_key, first_size,
                         f"larger than [message] max_size = {max_size} bytes, still {exc.size} bytes or more "
                         f"without {', '.join(dropped)}") from None
    event.conversions.lossy[:] = smaller.conversions.lossy  # the first, failed pass noted only a part
    event.conversions.lossless[:] = smaller.conversions.lossless
    log.warning("%s %s: at least %s bytes, over [message] max_size = %d: dropped %s (now %d bytes; header %s "
                "names it)", event.type, event.routing_key, first_size, max_size, ", ".join(dropped),
                len(msg.payload), HEADER)
    return msg
