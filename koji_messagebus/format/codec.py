"""AMQP 1.0 message bytes built in plain Python, converting values in the same pass.

The hub hands a callback its kwargs with datetimes, sets, tuples and whatever else; this encoder
walks them once and writes the message: values AMQP has a type for are written as they are, the
others converted on the way by the policy of `values.convert_other` (datetimes become koji's
`convert_datetime` strings, so no deep copy is made first), each conversion noted.  It never
raises for a value: cycles, nesting beyond `values.MAX_DEPTH`, lone surrogates and objects whose
repr raises are converted too.  Only a message larger than `limit` is refused (`TooLarge`).

For what proton can encode, the bytes are exactly what python-qpid-proton 0.40 writes
(tests/unit/test_wire_codec.py compares them): a durable header; properties with message-id, to,
subject and creation-time; application-properties; an amqp-value body.  str8/vbin8 up to 255
bytes, else str32/vbin32; smalllong for -128..127, else long; list0 for an empty list, else
list32; map32 for every map; the properties list as list8 while it fits in 255 bytes, with
trailing nulls left out.  Unlike proton, which holds at most 65,535 values per message and then
fails with `DataException: [-10]`, list32 and map32 carry up to 2^32 - 1 values, so large
messages (a content-generator import with thousands of outputs) are written too.
"""

from __future__ import annotations

import datetime
import struct
import uuid
from typing import Any, Optional

from koji_messagebus.format import values
from koji_messagebus.format.values import Conversions

#: a message larger than this is refused before it reaches the broker (RabbitMQ 3.x's largest
#: max_message_size is 512 MiB, its default 128 MiB; 4.x's default is 16 MiB)
MAX_MESSAGE_BYTES = 128 * 1024 * 1024


class Unsupported(Exception):
    """Message fields of the wrong type (a programming error, not a value from the hub)."""


class TooLarge(Exception):
    """The encoded message would be larger than the limit."""

    def __init__(self, size: int, limit: int):
        self.size, self.limit = size, limit
        super().__init__(f"message of more than {size} bytes, over the limit of {limit} bytes")


#: section headers: descriptor 0x00, smallulong code
HEADER_DURABLE = b"\x00\x53\x70\xc0\x02\x01\x41"  # header: list8 of one field, durable = true
MAX_TTL_MS = 2 ** 32 - 1

PROPERTIES = b"\x00\x53\x73"
APPLICATION_PROPERTIES = b"\x00\x53\x74"
AMQP_VALUE = b"\x00\x53\x77"
#: properties fields between subject and creation-time: reply-to, correlation-id, content-type,
#: content-encoding, absolute-expiry-time (all null)
_FIVE_NULLS = b"\x40" * 5
_MAP32 = b"\xd1\0\0\0\0\0\0\0\0"  # size and count filled in when the map is written
_LIST32 = b"\xd0\0\0\0\0\0\0\0\0"
_STR8 = [b"\xa1" + bytes((n,)) for n in range(256)]
_SMALL = {v: b"\x55" + v.to_bytes(1, "big", signed=True) for v in range(-128, 128)}
_INT64_MIN, _INT64_MAX = values.INT64_MIN, values.INT64_MAX
_DATETIME = datetime.datetime
#: encoded map keys (str8 + UTF-8) by key: bounded in count and key length, so that keys the hub
#: makes up (a content generator's extra) cannot grow it without limit
_KEYS: dict[str, bytes] = {}
_KEY_CACHE_SIZE = 4096
_KEY_CACHE_BYTES = 64

_pack_long = struct.Struct(">q").pack
_pack_double = struct.Struct(">d").pack
_pack_u32 = struct.Struct(">I").pack
_pack_two_u32 = struct.Struct(">II").pack

#: where a container is: (its parent's node, its key or index); `Optional`, not `| None`: a runtime
#: alias, evaluated on Python 3.9
Node = Optional[tuple[Any, Any]]


class _Pass:
    """The state of one message's encoding: conversions noted, containers being written, limit."""

    __slots__ = ("conv", "active", "limit")

    def __init__(self, conv: Conversions, limit: int):
        self.conv = conv
        self.active: dict[int, Node] = {}
        self.limit = limit

    def note(self, node: Node, key: Any, what: str, lossy: bool = False) -> None:
        self.conv.note(_path(node, key), what, lossy)

    def mark(self) -> tuple[int, int]:
        return len(self.conv.lossless), len(self.conv.lossy)

    def reset(self, mark: tuple[int, int]) -> None:
        del self.conv.lossless[mark[0]:]
        del self.conv.lossy[mark[1]:]


class _Rewrite(Exception):
    """A map with a key that is not a plain str: write it again, converting its keys."""


def _path(node: Node, key: Any) -> str:
    """'info.extra[2].name' for a value inside the body (keys are str, list indexes int)."""
    parts: list[str] = []
    while True:
        if key is not None:
            parts.append(f"[{key}]" if type(key) is int else f".{key}")
        if node is None:
            break
        node, key = node
    return "".join(reversed(parts)).lstrip(".")


def header_with_ttl(ttl_ms: int) -> bytes:
    """The header section with a ttl: list8 of three fields, durable = true, priority = null, ttl =
    uint in milliseconds, in proton's compact forms (uint0, smalluint, uint)."""
    ttl_ms = max(0, min(int(ttl_ms), MAX_TTL_MS))
    if ttl_ms == 0:
        value = b"\x43"
    elif ttl_ms < 256:
        value = b"\x52" + bytes((ttl_ms,))
    else:
        value = b"\x70" + struct.pack(">I", ttl_ms)
    return b"\x00\x53\x70\xc0" + bytes((3 + len(value), 3)) + b"\x41\x40" + value


def encode_message(msg_id: str, created: float, subject: str, to: str | None,
                   properties: dict[str, Any], body: Any, conversions: Conversions | None = None,
                   limit: int = MAX_MESSAGE_BYTES, ttl_ms: int | None = None) -> bytes:
    """The bytes of Message(id=msg_id, durable=True, subject=subject, address=to,
    creation_time=created, properties=properties, body=body, ttl=ttl_ms/1000).encode(), converting
    what proton could not take (noted in `conversions`); TooLarge beyond `limit` bytes."""
    if type(msg_id) is not str or type(subject) is not str or (to is not None and type(to) is not str) \
            or type(properties) is not dict:
        raise Unsupported("message fields")
    state = _Pass(conversions if conversions is not None else Conversions(), limit)
    fields = bytearray()  # the properties list: message-id, user-id, to, subject, ..., creation-time
    _value(msg_id, fields, 0, None, "message-id", state)
    fields += b"\x40"  # user-id
    _value(to, fields, 0, None, "to", state)
    _value(subject, fields, 0, None, "subject", state)
    count = 4
    millis = int(created * 1000)
    if millis:  # proton leaves a zero creation-time out (and the nulls before it)
        fields += _FIVE_NULLS
        fields += b"\x83" + _pack_timestamp(millis)
        count = 10
    if ttl_ms is None:
        out = bytearray(HEADER_DURABLE)
    else:
        out = bytearray(header_with_ttl(ttl_ms))
    out += PROPERTIES
    size = len(fields) + 1  # the count byte of list8
    out += b"\xc0" + bytes((size, count)) if size <= 255 else b"\xd0" + _pack_two_u32(size + 3, count)
    out += fields
    out += APPLICATION_PROPERTIES
    _map(properties, out, 0, None, "headers", state)
    if body is not None:
        out += AMQP_VALUE
        _value(body, out, 0, None, None, state)
    if len(out) > limit:
        raise TooLarge(len(out), limit)
    return bytes(out)


def _pack_timestamp(millis: int) -> bytes:
    try:
        return _pack_long(millis)
    except struct.error:
        raise Unsupported("creation time beyond 64 bits") from None


def _value(value: Any, out: bytearray, depth: int, node: Node, key: Any, state: _Pass) -> None:
    """Append one value (exact classes only, as proton looks them up: a subclass of str or int may
    be a proton type); convert anything else by the values policy."""
    cls = type(value)
    if cls is str:
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            state.note(node, key, "lone surrogate -> \\u escape", lossy=True)
            raw = value.encode("utf-8", "backslashreplace")
        n = len(raw)
        if n <= 255:
            out += _STR8[n]
        else:
            if n > state.limit:
                raise TooLarge(n, state.limit)
            out += b"\xb1" + _pack_u32(n)
        out += raw
    elif cls is dict:
        _map(value, out, depth, node, key, state)
    elif value is None:
        out += b"\x40"
    elif cls is int:
        if -128 <= value <= 127:
            out += _SMALL[value]
        elif _INT64_MIN <= value <= _INT64_MAX:
            out += b"\x81" + _pack_long(value)
        else:
            state.note(node, key, "int beyond 64 bits -> str")
            _value(str(value), out, depth, node, key, state)
    elif cls is bool:
        out += b"\x41" if value else b"\x42"
    elif cls is float:
        out += b"\x82" + _pack_double(value)
    elif cls is list or cls is tuple:
        _list(value, out, depth, node, key, state)
    elif cls is bytes:
        n = len(value)
        out += (b"\xa0" + bytes((n,)) if n <= 255 else b"\xb0" + _pack_u32(n)) + value
    elif cls is uuid.UUID:
        out += b"\x98" + value.bytes
    elif cls is _DATETIME and value.tzinfo is None:  # the hub's most common value to convert; no
        _value(values.datetime_text(value), out, depth, node, key, state)  # tzinfo whose methods could raise
    else:
        _other(value, out, depth, node, key, state)


def _other(value: Any, out: bytearray, depth: int, node: Node, key: Any, state: _Pass) -> None:
    replacement, note, lossy = values.convert_other(value)
    if note:
        state.note(node, key, note, lossy)
    if type(replacement) is str:
        _value(replacement, out, depth, node, key, state)
        return
    ident = id(value)  # a converted container (a set, a dict subclass) may hold itself too
    if ident in state.active:
        _cycle(value, out, node, key, state)
        return
    state.active[ident] = (node, key)
    try:
        _value(replacement, out, depth + 1, node, key, state)
    finally:
        del state.active[ident]


def _enter(value: Any, out: bytearray, depth: int, node: Node, key: Any, state: _Pass) -> bool:
    """Whether to write this container: not when it is too deep or encloses itself."""
    if depth >= values.MAX_DEPTH:
        state.note(node, key, f"nested deeper than {values.MAX_DEPTH} levels -> abbreviated repr string",
                   lossy=True)
        _value(values.too_deep_text(value), out, depth, node, key, state)
        return False
    if id(value) in state.active:
        _cycle(value, out, node, key, state)
        return False
    if len(out) > state.limit:
        raise TooLarge(len(out), state.limit)
    return True


def _cycle(value: Any, out: bytearray, node: Node, key: Any, state: _Pass) -> None:
    state.note(node, key, "reference cycle -> placeholder string", lossy=True)
    where = state.active[id(value)]
    _value(values.cycle_text(value, _path(*where) if where else ""), out, 0, node, key, state)


def _list(value: list | tuple, out: bytearray, depth: int, node: Node, key: Any, state: _Pass) -> None:
    if not value:
        out += b"\x45"  # list0
        return
    if not _enter(value, out, depth, node, key, state):
        return
    here = (node, key)
    state.active[id(value)] = here
    at = len(out) + 1
    out += _LIST32
    depth += 1
    for i, item in enumerate(value):
        cls = type(item)
        if cls is int and -128 <= item <= 127:
            out += _SMALL[item]
        elif item is None:
            out += b"\x40"
        else:
            _value(item, out, depth, here, i, state)
    out[at:at + 8] = _pack_two_u32(len(out) - at - 4, len(value))
    del state.active[id(value)]


def _map(value: dict, out: bytearray, depth: int, node: Node, key: Any, state: _Pass) -> None:
    if not _enter(value, out, depth, node, key, state):
        return
    here = (node, key)
    state.active[id(value)] = here
    start = len(out)
    mark = state.mark()
    out += _MAP32
    depth += 1
    try:
        for k, item in value.items():  # the common case, inline: str keys, scalar values
            if type(k) is not str:
                raise _Rewrite
            encoded = _KEYS.get(k)
            if encoded is None:
                encoded = _key(k)
            out += encoded
            cls = type(item)
            if cls is str:
                raw = item.encode("utf-8")
                n = len(raw)
                if n <= 255:
                    out += _STR8[n]
                elif n <= state.limit:
                    out += b"\xb1" + _pack_u32(n)
                else:
                    raise TooLarge(n, state.limit)
                out += raw
            elif item is None:
                out += b"\x40"
            elif cls is int and -128 <= item <= 127:
                out += _SMALL[item]
            else:
                _value(item, out, depth, here, k, state)
        count = 2 * len(value)
    except (_Rewrite, UnicodeEncodeError):  # start this map again, the careful way
        del out[start + len(_MAP32):]
        state.reset(mark)
        count = 2 * _careful_pairs(value, out, depth, here, state)
    out[start + 1:start + 9] = _pack_two_u32(len(out) - start - 5, count)
    del state.active[id(value)]


def _key(k: str) -> bytes:
    """A map key's bytes (str8 or str32), kept in _KEYS while it is short and there is room: the hub's
    messages use the same few hundred keys again and again."""
    raw = k.encode("utf-8")
    n = len(raw)
    encoded = (_STR8[n] if n <= 255 else b"\xb1" + _pack_u32(n)) + raw
    if n <= _KEY_CACHE_BYTES and len(_KEYS) < _KEY_CACHE_SIZE:
        _KEYS[k] = encoded
    return encoded


def _careful_pairs(value: dict, out: bytearray, depth: int, here: Node, state: _Pass) -> int:
    """Write the pairs of a map whose keys need converting (to str, without lone surrogates)."""
    pairs: dict[str, Any] = {}
    for k, item in value.items():
        text, note = values.key_text(k)
        if note:
            state.note(here, values.safe_repr(k), note)
        text, changed = values.utf8_text(text)
        if changed:
            state.note(here, text, "lone surrogate in a key -> \\u escape", lossy=True)
        if text in pairs:
            state.note(here, text, "two keys became the same str: the first is dropped", lossy=True)
        pairs[text] = item
    for k, item in pairs.items():
        _value(k, out, depth, here, None, state)
        _value(item, out, depth, here, k, state)
    return len(pairs)


# ---- decoding (what this module writes, and the other fixed-width types) ----------------------
_FIXED: dict[int, tuple[int, Any]] = {
    0x50: (1, lambda b: b[0]), 0x51: (1, lambda b: int.from_bytes(b, "big", signed=True)),
    0x52: (1, lambda b: b[0]), 0x53: (1, lambda b: b[0]), 0x54: (1, lambda b: b[0]),
    0x55: (1, lambda b: int.from_bytes(b, "big", signed=True)),
    0x60: (2, lambda b: int.from_bytes(b, "big")), 0x61: (2, lambda b: int.from_bytes(b, "big", signed=True)),
    0x70: (4, lambda b: int.from_bytes(b, "big")), 0x71: (4, lambda b: int.from_bytes(b, "big", signed=True)),
    0x72: (4, lambda b: struct.unpack(">f", b)[0]), 0x73: (4, lambda b: chr(int.from_bytes(b, "big"))),
    0x80: (8, lambda b: int.from_bytes(b, "big")), 0x81: (8, lambda b: int.from_bytes(b, "big", signed=True)),
    0x82: (8, lambda b: struct.unpack(">d", b)[0]), 0x83: (8, lambda b: int.from_bytes(b, "big", signed=True) / 1000),
    0x98: (16, lambda b: uuid.UUID(bytes=bytes(b))),
}
_CONSTANTS: dict[int, Any] = {0x40: None, 0x41: True, 0x42: False, 0x43: 0, 0x44: 0}


def decode_value(buf: bytes | memoryview, pos: int = 0) -> tuple[Any, int]:
    """One AMQP value at `pos`: (value, position after it).  Iterative, so any nesting depth and
    any count decodes (proton's decoder keeps at most 65,535 values and silently drops the rest).
    Strings and symbols become str, binaries bytes, lists list, maps dict, timestamps seconds."""
    data = memoryview(buf)
    stack: list[tuple[list[Any], int, bool]] = []  # (items so far, values still to read, is it a map)
    value: Any
    while True:
        code = data[pos]
        pos += 1
        if code == 0x00:  # described: keep the value, drop the descriptor
            _descriptor, pos = decode_value(data, pos)
            continue
        if code in _CONSTANTS:
            value = _CONSTANTS[code]
        elif code == 0x45:
            value = []
        elif code in _FIXED:
            width, conv = _FIXED[code]
            value = conv(data[pos:pos + width])
            pos += width
        elif code in (0xa0, 0xa1, 0xa3, 0xb0, 0xb1, 0xb3):
            width = 1 if code < 0xb0 else 4
            n = int.from_bytes(data[pos:pos + width], "big")
            pos += width
            raw = bytes(data[pos:pos + n])
            pos += n
            value = raw if code in (0xa0, 0xb0) else raw.decode("utf-8")
        elif code in (0xc0, 0xc1, 0xd0, 0xd1):
            width = 1 if code < 0xd0 else 4
            count = int.from_bytes(data[pos + width:pos + 2 * width], "big")
            pos += 2 * width
            is_map = code in (0xc1, 0xd1)
            if count:
                stack.append(([], count, is_map))
                continue
            value = {} if is_map else []
        else:
            raise ValueError(f"AMQP type code 0x{code:02x} at byte {pos - 1} is not decoded here")
        while True:  # hand the value to its container; close the containers it completes
            if not stack:
                return value, pos
            container, left, is_map = stack[-1]
            container.append(value)
            left -= 1
            if left:
                stack[-1] = (container, left, is_map)
                break
            stack.pop()
            value = dict(zip(container[::2], container[1::2])) if is_map else container


def decode_message(payload: bytes) -> dict[str, Any]:
    """The sections of a message: durable, id, to, subject, creation_time, headers, body."""
    out: dict[str, Any] = {"durable": False, "id": None, "to": None, "subject": None, "creation_time": 0,
                           "headers": {}, "body": None}
    pos = 0
    while pos < len(payload):
        if payload[pos] != 0x00:
            raise ValueError(f"no section at byte {pos}")
        code, pos = decode_value(payload, pos + 1)
        value, pos = decode_value(payload, pos)
        if code == 0x70:
            out["durable"] = bool(value and value[0])
        elif code == 0x73:
            fields = list(value) + [None] * (13 - len(value))
            out["id"], out["to"], out["subject"] = fields[0], fields[2], fields[3]
            out["creation_time"] = fields[9] or 0
        elif code == 0x74:
            out["headers"] = value or {}
        elif code == 0x77:
            out["body"] = value
    return out
