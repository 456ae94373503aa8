"""Showing config values in messages without their secrets: passwords hidden, the user
information of URLs cut out."""

from __future__ import annotations

import re

from koji_messagebus.config.options import SECRET_KEYS


def show_value(section: str, key: str, raw: str) -> str:
    """A value as error messages show it: secrets hidden, credentials in URLs redacted."""
    if (section, key) in SECRET_KEYS:
        return "'***'"
    if (section, key) == ("broker", "urls"):
        return repr(redact_url(raw))
    return repr(raw)


_URL_START = re.compile(r"(?i)\bamqps?://")


def redact_url(text: str) -> str:
    """Hide the user information of each URL in `text` (one URL or the `urls` list), found by
    structure, not by what a password may hold: a URL runs from its `amqp://`/`amqps://` to the
    next one, and everything before the last `@` of that stretch goes (a password may hold
    spaces, `/`, `:` or `@`).  Text before the first URL is treated the same way."""
    starts = [m.start() for m in _URL_START.finditer(text)]
    bounds = [0, *[i for i in starts if i > 0], len(text)]
    out = []
    for begin, end in zip(bounds, bounds[1:]):
        part = text[begin:end]
        at = part.rfind("@")
        if at >= 0:
            scheme = _URL_START.match(part)
            head = part[:scheme.end()] if scheme else ""
            part = f"{head}***{part[at:]}"
        out.append(part)
    return "".join(out)
