"""The message table: hub callback + keyword arguments -> routing key, headers and body.

Pure functions, no I/O.  The table follows Koji's documented messagebus format; RPMSign and
BuildPromote are added in the same style.  Every value is taken with `.get` so that hubs
that pass other keys (older or newer Koji) still produce a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .values import Conversions, header_value, to_amqp, utf8_text

MAX_KEY_BYTES = 255

#: hub callback type -> message type
CALLBACK_TYPES: dict[str, str] = {
    "postPackageListChange": "PackageListChange",
    "postTaskStateChange": "TaskStateChange",
    "postBuildStateChange": "BuildStateChange",
    "postImport": "Import",
    "postRPMSign": "RPMSign",
    "postTag": "Tag",
    "postUntag": "Untag",
    "postRepoInit": "RepoInit",
    "postRepoDone": "RepoDone",
    "postBuildPromote": "BuildPromote",
}
MESSAGE_TYPES: tuple[str, ...] = tuple(CALLBACK_TYPES.values())


@dataclass(frozen=True)
class Event:
    """One message as the table defines it, independent of any transport."""

    type: str
    routing_key: str
    headers: dict[str, Any]
    body: dict[str, Any]
    conversions: Conversions = field(default_factory=Conversions, compare=False)


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, Mapping) else None


def _package_list(kw: Mapping) -> tuple[list, dict]:
    tag, pkg = _get(kw.get("tag"), "name"), _get(kw.get("package"), "name")
    return [tag, pkg], {"tag": tag, "package": pkg}


def _task_state(kw: Mapping) -> tuple[list, dict]:
    method, attribute = _get(kw.get("info"), "method"), kw.get("attribute")
    headers = {"method": method, "attribute": attribute, "old": kw.get("old"), "new": kw.get("new")}
    return [method, attribute], headers


def _build_state(kw: Mapping) -> tuple[list, dict]:
    info, attribute = kw.get("info"), kw.get("attribute")
    headers = {
        "name": _get(info, "name"),
        "version": _get(info, "version"),
        "release": _get(info, "release"),
        "attribute": attribute,
        "old": kw.get("old"),
        "new": kw.get("new"),
    }
    return [attribute, _get(info, "name")], headers


def _import(kw: Mapping) -> tuple[list, dict]:
    return [kw.get("type")], {"importType": kw.get("type")}


def _nvr_headers(build: Any) -> dict:
    return {k: _get(build, k) for k in ("name", "version", "release")}


def _tagging(kw: Mapping) -> tuple[list, dict]:
    tag, build, user = _get(kw.get("tag"), "name"), kw.get("build"), _get(kw.get("user"), "name")
    return [tag, _get(build, "name"), user], {"tag": tag, **_nvr_headers(build), "user": user}


def _rpm_sign(kw: Mapping) -> tuple[list, dict]:
    sigkey, build, rpm = kw.get("sigkey"), kw.get("build"), kw.get("rpm")
    headers = {"sigkey": sigkey, **_nvr_headers(build), "rpm": _get(rpm, "name"), "arch": _get(rpm, "arch")}
    return [sigkey, _get(build, "name")], headers


def _repo_init(kw: Mapping) -> tuple[list, dict]:
    tag = _get(kw.get("tag"), "name")
    return [tag], {"tag": tag}


def _repo_done(kw: Mapping) -> tuple[list, dict]:
    tag = _get(kw.get("repo"), "tag_name")
    return [tag], {"tag": tag}


def _build_promote(kw: Mapping) -> tuple[list, dict]:
    build, user = kw.get("build"), _get(kw.get("user"), "name")
    headers = {
        **_nvr_headers(build),
        "draft_release": kw.get("draft_release"),
        "target_release": kw.get("target_release"),
        "user": user,
    }
    return [_get(build, "name"), user], headers


_TABLE: dict[str, Callable[[Mapping], tuple[list, dict]]] = {
    "PackageListChange": _package_list,
    "TaskStateChange": _task_state,
    "BuildStateChange": _build_state,
    "Import": _import,
    "RPMSign": _rpm_sign,
    "Tag": _tagging,
    "Untag": _tagging,
    "RepoInit": _repo_init,
    "RepoDone": _repo_done,
    "BuildPromote": _build_promote,
}


#: the token for a missing name (None): Koji's name policy (hub.conf RegexNameInternal
#: `^[A-Za-z0-9/_.+-]+$`, RegexUserName `^[A-Za-z0-9/_.@-]+$`) never allows `~`, so no real tag,
#: package, user or method can be called this; `~` needs no escaping in AMQP addresses either
MISSING_TOKEN = "~none~"


def key_token(value: Any) -> str:
    """One routing-key token: the name as text, '.' replaced by '_' (so the token count is fixed),
    MISSING_TOKEN for None, lone surrogates as \\u escapes (a routing key must be UTF-8)."""
    if value is None:
        return MISSING_TOKEN
    if type(value) is not str:
        value = header_value(value)
        value = MISSING_TOKEN if value is None else value if type(value) is str else str(value)
    return utf8_text(value)[0].replace(".", "_")


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _cut(text: str, size: int) -> str:
    """`text` cut to at most `size` bytes of UTF-8, on a character boundary."""
    return text.encode("utf-8")[:max(size, 0)].decode("utf-8", "ignore")


def fit_tokens(tokens: list[str], budget: int) -> list[str]:
    """Shorten the longest tokens until their UTF-8 sizes add up to at most `budget` bytes; every
    token stays (perhaps empty), so the key keeps its token count."""
    sizes = [_utf8_len(t) for t in tokens]
    while sum(sizes) > budget and max(sizes) > 0:
        top = max(sizes)
        longest = [i for i, n in enumerate(sizes) if n == top]
        below = max((n for n in sizes if n < top), default=0)
        excess = sum(sizes) - budget
        target = max(below, top - -(-excess // len(longest)))  # ceil: cut the longest ones evenly
        for i in longest:
            tokens[i] = _cut(tokens[i], target)
            sizes[i] = _utf8_len(tokens[i])
    return tokens


def routing_key(prefix: str, msg_type: str, tokens: list) -> str:
    """`prefix.Type.token...`, at most 255 bytes of UTF-8: when longer, the tokens after the type
    are shortened, the longest first, on character boundaries; none is ever dropped."""
    head = f"{prefix}.{msg_type}" if prefix else msg_type
    texts = [key_token(t) for t in tokens]
    key = ".".join([head, *texts])
    if _utf8_len(key) <= MAX_KEY_BYTES:
        return key
    budget = MAX_KEY_BYTES - _utf8_len(head) - len(texts)  # the dots
    if budget < 0:  # only with a prefix longer than config allows: keep the type and the dots
        head = _cut(head, MAX_KEY_BYTES - len(texts))
        budget = 0
    return ".".join([head, *fit_tokens(texts, budget)])


def format_event(msg_type: str, kwargs: Mapping[str, Any], prefix: str, convert: bool = True) -> Event:
    """Build the message for one event: routing key, headers (with `type`) and body.  With
    convert=False the body is the kwargs as they are: wire.encode converts while it encodes (the
    hub's path, one pass); with True the body holds the converted values (previews, docs, tests)."""
    tokens, table_headers = _TABLE[msg_type](kwargs)
    conv = Conversions()
    headers = {"type": msg_type}
    for name, value in table_headers.items():
        headers[name] = header_value(value, conv, f"headers.{name}")
    if convert:
        body = to_amqp(dict(kwargs), conv)
    else:
        body = kwargs if type(kwargs) is dict else dict(kwargs)
    return Event(msg_type, routing_key(prefix, msg_type, tokens), headers, body, conv)
