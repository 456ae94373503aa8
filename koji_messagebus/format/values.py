"""The conversion policy: what a value the hub passed becomes in a message.

AMQP (and proton, which looks up the exact class of a value) takes str, bytes, bool, None, UUID,
int within 64 bits, float, list and map.  Everything else is converted to the nearest of those,
and each conversion is reported, so that nothing is dropped silently and no value can stop a
message: datetimes become koji's `convert_datetime` strings (`2026-01-02 03:04:05.123456`), sets
sorted lists, enum members their values, big ints and Decimals strings, anything unknown its
repr.  Cycles, nesting deeper than MAX_DEPTH, lone surrogates and objects whose repr raises are
converted too (lossy, noted).  Whatever a value's own methods raise while it is converted, even
SystemExit, is contained (`contained`): data must never abort a hub request.

Two walkers apply this policy: `to_amqp` here (Python values, for previews and tests) and the
encoder in format/codec.py (bytes, in one pass, for the hub).  Both call `convert_other` for anything
that is not a plain AMQP type, so they cannot disagree.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import reprlib
import threading
import uuid
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: containers nested deeper than this become an abbreviated repr string: real Koji data nests less
#: than 10 levels, and a consumer decoding recursively (proton's Python API) copes with 100
MAX_DEPTH = 100

_PASS_THROUGH = (str, bool, float, bytes, type(None), uuid.UUID)
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 80, 80


@dataclass
class Conversions:
    """What had to be changed to make a value encodable: path -> description."""

    lossless: list[str] = field(default_factory=list)
    lossy: list[str] = field(default_factory=list)

    def note(self, path: str, what: str, lossy: bool = False) -> None:
        (self.lossy if lossy else self.lossless).append(f"{path or '<root>'}: {what}")


def contained(exc: BaseException) -> bool:
    """Whether an exception a value's own method raised (`__repr__`, `__iter__`, `get`, ...) while
    it was converted is contained, so that the message is still built: every one, SystemExit too,
    except KeyboardInterrupt in the main thread, which is a real Ctrl-C (signals reach only the
    main thread; a hub's request threads never receive one)."""
    return not (isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread())


def safe_repr(value: Any) -> str:
    """repr(value), or a fixed text naming its type when its __repr__ raises."""
    try:
        text = repr(value)
        return text if type(text) is str else str.__str__(text)
    except BaseException as exc:  # any object may be passed by the hub or another plugin
        if not contained(exc):
            raise
        return f"<{type(value).__qualname__} object: repr() raised {type(exc).__name__}>"


def short_repr(value: Any) -> str:
    """A bounded repr (reprlib: 3 levels, long strings cut) for values too deep to send whole."""
    try:
        return _SHORT.repr(value)
    except BaseException as exc:  # a hostile __iter__, __lt__, value, ... (contained)
        if not contained(exc):
            raise
        return f"<{type(value).__qualname__} object>"


def utf8_text(text: str) -> tuple[str, bool]:
    """`text` made encodable as UTF-8: lone surrogates become `\\udcxx` escapes; (text, changed)."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8"), True


def label_text(text: str) -> tuple[str, str | None]:
    """`text` made fit for a routing key or a header: lone surrogates escaped as by `utf8_text`, and
    NUL as `\\x00`, since consumers may treat keys and headers as C strings (the body keeps NUL
    exact); (text, note of what was escaped, or None)."""
    text, changed = utf8_text(text)
    notes = ["lone surrogate -> \\u escape"] if changed else []
    if "\0" in text:
        text = text.replace("\0", "\\x00")
        notes.append("NUL -> \\x00 escape")
    return text, ("; ".join(notes) or None)


def bytes_text(value: bytes | bytearray | memoryview) -> str:
    """A name given as bytes, as text: UTF-8, with undecodable bytes as `\\xNN` escapes."""
    return bytes(value).decode("utf-8", "backslashreplace")


def datetime_text(value: datetime.datetime) -> str:
    """koji.util.encode_datetime's format: what consumers of koji's plugins always received."""
    return value.isoformat(" ")


def convert_other(value: Any) -> tuple[Any, str | None, bool]:
    """One step of conversion for a value that is not a plain AMQP type: (replacement, note, lossy).
    The replacement may still hold values to convert (a set's items, an enum's value)."""
    try:
        return _convert_other(value)
    except BaseException as exc:
        if not contained(exc):
            raise
        return (f"<{type(value).__qualname__} object: cannot be converted ({type(exc).__name__})>",
                f"{type(value).__name__} -> placeholder string ({type(exc).__name__})", True)


def _convert_other(value: Any) -> tuple[Any, str | None, bool]:
    if isinstance(value, enum.Enum):
        return value.value, f"{type(value).__name__} member -> its value", False
    if isinstance(value, datetime.datetime):
        return datetime_text(value), None, False
    if isinstance(value, xmlrpc.client.DateTime):  # as koji.util.encode_datetime does
        return datetime_text(datetime.datetime(*value.timetuple()[:6])), None, False
    if isinstance(value, str):
        return str.__str__(value), None, False
    if isinstance(value, int):
        if type(value) is int:  # beyond 64 bits (the walkers pass smaller ones through)
            return str(value), "int beyond 64 bits -> str", False
        return int.__int__(value), None, False
    if isinstance(value, float):
        return float.__float__(value), None, False
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value), None, False
    if isinstance(value, dict):
        return dict(value), None, False
    if isinstance(value, (list, tuple)):
        return list(value), None, False
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            items.sort()
        except BaseException as exc:  # mixed or unorderable items
            if not contained(exc):
                raise
            items.sort(key=safe_repr)
        return items, f"{type(value).__name__} -> sorted list", False
    if isinstance(value, decimal.Decimal):
        return str(value), "Decimal -> str", False
    if isinstance(value, (datetime.date, datetime.time)):
        return str(value), None, False
    if isinstance(value, datetime.timedelta):
        return value.total_seconds(), "timedelta -> seconds (float)", False
    return safe_repr(value), f"{type(value).__name__} -> repr string", True


def key_text(key: Any) -> tuple[str, str | None]:
    """A map key as a str (AMQP maps may hold any key; consumers expect strings): (key, note)."""
    if type(key) is str:
        return key, None
    replacement, _note, _lossy = convert_other(key)
    if type(replacement) is str:
        text = replacement
    else:
        try:
            text = str(replacement)
        except BaseException as exc:
            if not contained(exc):
                raise
            text = safe_repr(replacement)
    if isinstance(key, (str, datetime.datetime, xmlrpc.client.DateTime)):
        return text, None
    return text, f"map key of type {type(key).__name__} -> str"


def cycle_text(value: Any, where: str) -> str:
    return f"<reference to the enclosing {type(value).__name__} at {where or '<root>'}>"


def too_deep_text(value: Any) -> str:
    return short_repr(value)


def to_amqp(value: Any, conversions: Conversions | None = None, path: str = "") -> Any:
    """Return `value` made encodable by proton; record changes in `conversions`."""
    conv = conversions if conversions is not None else Conversions()
    return _walk(value, conv, path, 0, {})


def _walk(value: Any, conv: Conversions, path: str, depth: int, active: dict[int, str]) -> Any:
    cls = type(value)
    if cls is str:
        text, changed = utf8_text(value)
        if changed:
            conv.note(path, "lone surrogate -> \\u escape", lossy=True)
        return text
    if cls in _PASS_THROUGH:
        return value
    if cls is int and INT64_MIN <= value <= INT64_MAX:
        return value
    if cls is dict or cls is list or cls is tuple:
        if depth >= MAX_DEPTH:
            conv.note(path, f"nested deeper than {MAX_DEPTH} levels -> abbreviated repr string", lossy=True)
            return too_deep_text(value)
        ident = id(value)
        if ident in active:
            conv.note(path, "reference cycle -> placeholder string", lossy=True)
            return cycle_text(value, active[ident])
        active[ident] = path
        try:
            if cls is dict:
                out = {}
                for k, v in value.items():
                    key, note = key_text(k)
                    if note:
                        conv.note(f"{path}.{safe_repr(k)}" if path else safe_repr(k), note)
                    key, changed = utf8_text(key)
                    where = f"{path}.{key}" if path else key
                    if changed:
                        conv.note(where, "lone surrogate in a key -> \\u escape", lossy=True)
                    if key in out:
                        conv.note(where, "two keys became the same str: the first is dropped", lossy=True)
                    out[key] = _walk(v, conv, where, depth + 1, active)
                return out
            return [_walk(v, conv, f"{path}[{i}]", depth + 1, active) for i, v in enumerate(value)]
        finally:
            del active[ident]
    replacement, note, lossy = convert_other(value)
    if note:
        conv.note(path, note, lossy)
    if type(replacement) is str:  # the common end of a conversion
        return _walk(replacement, conv, path, depth, active)
    ident = id(value)
    if ident in active:
        conv.note(path, "reference cycle -> placeholder string", lossy=True)
        return cycle_text(value, active[ident])
    active[ident] = path
    try:
        return _walk(replacement, conv, path, depth + 1, active)
    finally:
        del active[ident]


def header_value(value: Any, conversions: Conversions | None = None, path: str = "") -> Any:
    """Make a value fit an application-property: str, int, float, bool or None only."""
    cls = type(value)
    if cls is str:
        text, note = label_text(value)
        if note and conversions is not None:
            conversions.note(path, note, lossy=True)
        return text
    if value is None or cls is bool or cls is float or (cls is int and INT64_MIN <= value <= INT64_MAX):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):  # a name as bytes: its text, not b'...'
        if conversions is not None:
            conversions.note(path, f"{cls.__name__} -> str (decoded as UTF-8)", lossy=True)
        return header_value(bytes_text(value), conversions, path)
    converted = to_amqp(value, conversions, path)
    if converted is None or type(converted) in (int, float, bool):
        return converted
    if type(converted) is not str:
        if conversions is not None:
            conversions.note(path, f"{type(converted).__name__} header -> str")
        converted = str(converted)
    text, note = label_text(converted)
    if note and conversions is not None:
        conversions.note(path, note, lossy=True)
    return text
