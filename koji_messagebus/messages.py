"""The message table: hub callback + keyword arguments -> routing key, headers and body.

Pure functions, no I/O.  The table follows Koji's documented messagebus format; RPMSign and
BuildPromote are added in the same style.  Every value is taken with `.get` so that hubs
that pass other keys (older or newer Koji) still produce a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .values import Conversions, header_value, to_amqp

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


def key_token(value: Any) -> str:
    """One routing-key token: str(value) with '.' replaced by '_' (so the token count is fixed)."""
    return str(value).replace(".", "_")


def routing_key(prefix: str, msg_type: str, tokens: list) -> str:
    """`prefix.Type.token...`, cut to at most 255 bytes of UTF-8 on a character boundary."""
    parts = [msg_type, *(key_token(t) for t in tokens)]
    if prefix:
        parts.insert(0, prefix)
    key = ".".join(parts)
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_KEY_BYTES:
        return key
    return raw[:MAX_KEY_BYTES].decode("utf-8", "ignore")


def message_type(cbtype: str) -> str | None:
    """The message type for a hub callback type, or None if it is not a published one."""
    return CALLBACK_TYPES.get(cbtype)


def format_event(msg_type: str, kwargs: Mapping[str, Any], prefix: str) -> Event:
    """Build the message for one event: routing key, headers (with `type`) and body."""
    tokens, table_headers = _TABLE[msg_type](kwargs)
    conv = Conversions()
    headers = {"type": msg_type}
    for name, value in table_headers.items():
        headers[name] = header_value(value, conv, f"headers.{name}")
    body = {_body_key(k, conv): to_amqp(v, conv, k) for k, v in kwargs.items()}
    return Event(msg_type, routing_key(prefix, msg_type, tokens), headers, body, conv)


def _body_key(key: Any, conv: Conversions) -> str:
    if type(key) is str:
        return key
    conv.note(repr(key), "keyword name -> str")
    return str(key)
