"""The message table: hub callback + keyword arguments -> routing key, headers and body.

Pure functions, no I/O.  The table follows Koji's documented messagebus format; RPMSign and
BuildPromote are added in the same style.  Every value is taken with `.get` so that hubs
that pass other keys (older or newer Koji) still produce a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from koji_messagebus.format.values import Conversions, contained, header_value, label_text, to_amqp

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


class _Args:
    """The kwargs as the table reads them: `.get` on each level, never raising.  A value that is not
    a map where one is expected, or a map whose `.get` raises, reads as None (the token becomes
    MISSING_TOKEN) and is noted, once, as a lossy conversion, so that the WARNING says why; a map
    whose `.get` raised is not asked again."""

    def __init__(self, kwargs: Any, conv: Conversions):
        self.kwargs, self.conv = kwargs, conv
        self._unreadable: set[str] = set()  # maps already noted: read as None from then on, noted once

    def __call__(self, key: str, inner: str | None = None) -> Any:
        """kwargs[key], or kwargs[key][inner] with `inner`."""
        value = self._get(self.kwargs, key, "")
        return value if inner is None else self._get(value, inner, key)

    def _get(self, mapping: Any, key: str, where: str) -> Any:
        if mapping is None or where in self._unreadable:
            return None
        try:
            if isinstance(mapping, Mapping):
                return mapping.get(key)
            what = f"{type(mapping).__name__}, not a map -> its keys read as None"
        except BaseException as exc:  # a hostile .get: the message is still built
            if not contained(exc):
                raise
            what = f"{type(mapping).__name__}.get({key!r}) raised {type(exc).__name__} -> its keys read as None"
        self._unreadable.add(where)
        self.conv.note(where or "kwargs", what, lossy=True)
        return None


Table = Callable[[_Args], tuple[list, dict]]


def _package_list(kw: _Args) -> tuple[list, dict]:
    tag, pkg = kw("tag", "name"), kw("package", "name")
    return [tag, pkg], {"tag": tag, "package": pkg}


def _task_state(kw: _Args) -> tuple[list, dict]:
    method, attribute = kw("info", "method"), kw("attribute")
    headers = {"method": method, "attribute": attribute, "old": kw("old"), "new": kw("new")}
    return [method, attribute], headers


def _build_state(kw: _Args) -> tuple[list, dict]:
    attribute = kw("attribute")
    headers = {
        "name": kw("info", "name"),
        "version": kw("info", "version"),
        "release": kw("info", "release"),
        "attribute": attribute,
        "old": kw("old"),
        "new": kw("new"),
    }
    return [attribute, headers["name"]], headers


def _import(kw: _Args) -> tuple[list, dict]:
    import_type = kw("type")
    return [import_type], {"importType": import_type}


def _nvr_headers(kw: _Args) -> dict:
    return {k: kw("build", k) for k in ("name", "version", "release")}


def _tagging(kw: _Args) -> tuple[list, dict]:
    tag, nvr, user = kw("tag", "name"), _nvr_headers(kw), kw("user", "name")
    return [tag, nvr["name"], user], {"tag": tag, **nvr, "user": user}


def unsigned(msg_type: str, kw: Mapping) -> bool:
    """An RPMSign without a signing key (an unsigned import): not published unless [topic]
    unsigned_rpm_sign says so, as Koji's protonmsg does.  Only None and an empty str or bytes count:
    nothing else is asked (a hostile value's __bool__ could raise)."""
    if msg_type != "RPMSign":
        return False
    sigkey = kw.get("sigkey")
    return sigkey is None or (type(sigkey) in (str, bytes) and not sigkey)


def _rpm_sign(kw: _Args) -> tuple[list, dict]:
    sigkey, nvr = kw("sigkey"), _nvr_headers(kw)
    headers = {"sigkey": sigkey, **nvr, "rpm": kw("rpm", "name"), "arch": kw("rpm", "arch")}
    token = None if type(sigkey) in (str, bytes) and not sigkey else sigkey  # '' (unsigned): MISSING_TOKEN
    return [token, nvr["name"]], headers


def _repo_init(kw: _Args) -> tuple[list, dict]:
    tag = kw("tag", "name")
    return [tag], {"tag": tag}


def _repo_done(kw: _Args) -> tuple[list, dict]:
    tag = kw("repo", "tag_name")
    return [tag], {"tag": tag}


def _build_promote(kw: _Args) -> tuple[list, dict]:
    nvr, user = _nvr_headers(kw), kw("user", "name")
    headers = {
        **nvr,
        "draft_release": kw("draft_release"),
        "target_release": kw("target_release"),
        "user": user,
    }
    return [nvr["name"], user], headers


_TABLE: dict[str, Table] = {
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
    MISSING_TOKEN for None, lone surrogates and NUL escaped (`label_text`), bytes decoded as UTF-8."""
    if value is None:
        return MISSING_TOKEN
    if type(value) is not str:
        value = header_value(value)
        value = MISSING_TOKEN if value is None else value if type(value) is str else str(value)
    return label_text(value)[0].replace(".", "_")


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


def _plain(kwargs: Any, conv: Conversions) -> dict[str, Any]:
    """The kwargs as a dict (the hub passes one; a Mapping that cannot be read gives an empty body)."""
    if type(kwargs) is dict:
        return kwargs
    try:
        return dict(kwargs)
    except BaseException as exc:  # contained: the message is still built
        if not contained(exc):
            raise
        conv.note("", f"kwargs of type {type(kwargs).__name__} cannot be read ({type(exc).__name__}) -> "
                  "empty body", lossy=True)
        return {}


def format_event(msg_type: str, kwargs: Mapping[str, Any], prefix: str, convert: bool = True) -> Event:
    """Build the message for one event: routing key, headers (with `type`) and body.  With
    convert=False the body is the kwargs as they are: wire.encode converts while it encodes (the
    hub's path, one pass); with True the body holds the converted values (previews, docs, tests)."""
    conv = Conversions()
    tokens, table_headers = _TABLE[msg_type](_Args(kwargs, conv))
    headers = {"type": msg_type}
    for name, value in table_headers.items():
        headers[name] = header_value(value, conv, f"headers.{name}")
    body = _plain(kwargs, conv)
    if convert:
        body = to_amqp(body, conv)
    return Event(msg_type, routing_key(prefix, msg_type, tokens), headers, body, conv)
