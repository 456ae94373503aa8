"""Recorded hub callback kwargs (tests/data/hub-callbacks, copied from a real Koji 1.35 hub),
decoded back into the Python types the hub passed (floats, tuples, datetimes)."""

from __future__ import annotations

import datetime
import decimal
import json
import os
from functools import cache
from typing import Any

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "hub-callbacks")


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        kind = value.get("__type__")
        if kind is None:
            return {k: decode(v) for k, v in value.items()}
        if kind == "float":
            return float(value["value"])
        if kind == "tuple":
            return tuple(decode(v) for v in value["items"])
        if kind == "datetime.datetime":
            return datetime.datetime.fromisoformat(value["iso"])
        if kind == "set":
            return set(decode(v) for v in value["items"])
        if kind == "bytes":
            return bytes.fromhex(value["hex"])
        if kind == "Decimal":
            return decimal.Decimal(value["value"])
        raise ValueError(f"unknown fixture type tag {kind}")
    return value


@cache
def _load(cbtype: str) -> list[dict]:
    with open(os.path.join(DATA, f"{cbtype}.json"), encoding="utf-8") as fh:
        return json.load(fh)


def entries(cbtype: str) -> list[dict]:
    """Every recorded call of `cbtype`: dicts with 'kwargs' (as the hub passed them),
    'converted' (what a @convert_datetime callback got) and the recording's metadata."""
    out = []
    for entry in _load(cbtype):
        out.append({**entry, "kwargs": decode(entry["kwargs"]),
                    "converted": decode(entry["kwargs_convert_datetime"])})
    return out


def first(cbtype: str, **match: Any) -> dict:
    """The first recorded kwargs of `cbtype` whose top-level values match."""
    for entry in entries(cbtype):
        if all(entry["kwargs"].get(k) == v for k, v in match.items()):
            return entry["kwargs"]
    raise LookupError(f"no {cbtype} fixture with {match}")
