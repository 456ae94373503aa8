"""Convert Python values into what AMQP 1.0 (python-qpid-proton) can encode.

Proton looks up the exact class of a value, so subclasses of str/int/dict, sets, Decimal,
datetimes, enum members and ints beyond 64 bits would make encoding fail.  Every value is
converted to the nearest encodable one and every conversion is reported, so nothing is
dropped silently and no value can stop a message.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_PASS_THROUGH = (str, bool, float, bytes, type(None), uuid.UUID)


@dataclass
class Conversions:
    """What had to be changed to make a value encodable: path -> description."""

    lossless: list[str] = field(default_factory=list)
    lossy: list[str] = field(default_factory=list)

    def note(self, path: str, what: str, lossy: bool = False) -> None:
        (self.lossy if lossy else self.lossless).append(f"{path or '<root>'}: {what}")


def to_amqp(value: Any, conversions: Conversions | None = None, path: str = "") -> Any:
    """Return `value` made encodable by proton; record changes in `conversions`."""
    conv = conversions if conversions is not None else Conversions()
    cls = type(value)
    if cls in _PASS_THROUGH:
        return value
    if cls is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
        conv.note(path, "int beyond 64 bits -> str")
        return str(value)
    if cls is dict:
        return {_key(k, conv, path): to_amqp(v, conv, f"{path}.{k}") for k, v in value.items()}
    if cls is list:
        return [to_amqp(v, conv, f"{path}[{i}]") for i, v in enumerate(value)]
    if cls is tuple:
        return [to_amqp(v, conv, f"{path}[{i}]") for i, v in enumerate(value)]
    return _convert_other(value, conv, path)


def _convert_other(value: Any, conv: Conversions, path: str) -> Any:
    """Slow path: every type proton cannot take as it is."""
    if isinstance(value, enum.Enum):
        conv.note(path, f"{type(value).__name__} member -> its value")
        return to_amqp(value.value, conv, path)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return to_amqp(int(value), conv, path)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return to_amqp(dict(value), conv, path)
    if isinstance(value, (list, tuple)):
        return to_amqp(list(value), conv, path)
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            items.sort()
        except TypeError:
            items.sort(key=repr)
        conv.note(path, f"{type(value).__name__} -> sorted list")
        return to_amqp(items, conv, path)
    if isinstance(value, decimal.Decimal):
        conv.note(path, "Decimal -> str")
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return str(value)
    if isinstance(value, datetime.timedelta):
        conv.note(path, "timedelta -> seconds (float)")
        return value.total_seconds()
    conv.note(path, f"{type(value).__name__} -> repr string", lossy=True)
    return repr(value)


def _key(key: Any, conv: Conversions, path: str) -> Any:
    if type(key) is str:
        return key
    if isinstance(key, str):
        return str(key)
    conv.note(f"{path}.{key!r}", f"map key of type {type(key).__name__} -> str")
    return str(key)


def header_value(value: Any, conversions: Conversions | None = None, path: str = "") -> Any:
    """Make a value fit an application-property: str, int, float, bool or None only."""
    converted = to_amqp(value, conversions, path)
    if converted is None or type(converted) in (str, int, float, bool):
        return converted
    if conversions is not None:
        conversions.note(path, f"{type(converted).__name__} header -> str")
    return str(converted)
