"""The message contract: one JSON Schema (draft 2020-12) per message type, shipped in `schemas/`.

A schema validates a message as a consumer sees it, as one JSON document
`{"routing_key": ..., "headers": {...}, "body": {...}}`.  The schemas are written by hand from
Koji's message table and the fixtures recorded on real hubs; they are data, not code output.
Each `$id` ends in the schema's version (`urn:koji-messagebus:message:Tag:1`), bumped whenever
the schema changes (tests/unit/test_schema.py holds every version's hash).

Loading and listing need nothing but the standard library.  Validating needs the optional
`jsonschema` package (`pip install koji-messagebus[schema]`), imported only here, on first use:
the hub never validates and never imports it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from koji_messagebus.errors import MessageError
from koji_messagebus.format.messages import MESSAGE_TYPES

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")
ID_PREFIX = "urn:koji-messagebus:message:"


class SchemaError(MessageError):
    """No schema for that type, or no validator installed."""


@dataclass(frozen=True)
class Problem:
    """Why a document does not match: where (a JSON path, `$.body.tag.name`) and what."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@cache
def _load(msg_type: str) -> str:
    with open(os.path.join(SCHEMA_DIR, f"{msg_type}.json"), encoding="utf-8") as fh:
        return fh.read()


def schema(msg_type: str) -> dict[str, Any]:
    """The schema of one message type (a fresh copy)."""
    if msg_type not in MESSAGE_TYPES:
        raise SchemaError(f"no message type {msg_type!r}; the types are {', '.join(MESSAGE_TYPES)}")
    return json.loads(_load(msg_type))


def schemas() -> dict[str, dict[str, Any]]:
    """Every message type's schema, in the message table's order."""
    return {t: schema(t) for t in MESSAGE_TYPES}


def version(doc: Mapping[str, Any]) -> int:
    """The version a schema's `$id` ends in."""
    sid = str(doc.get("$id", ""))
    head, _, tail = sid.rpartition(":")
    if not head.startswith(ID_PREFIX) or not tail.isdigit():
        raise SchemaError(f"schema $id {sid!r} is not {ID_PREFIX}TYPE:VERSION")
    return int(tail)


def document(routing_key: Any, headers: Any, body: Any) -> dict[str, Any]:
    """The JSON document a schema validates (headers and body already JSON values)."""
    return {"routing_key": routing_key, "headers": headers, "body": body}


def json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


@cache
def _validator(msg_type: str) -> Any:
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        raise SchemaError("validating needs the jsonschema package (4.0 or later): "
                          "pip install 'koji-messagebus[schema]'") from None
    return Draft202012Validator(schema(msg_type))


def require_validator() -> None:
    """Raise SchemaError (saying how to install it) when jsonschema is missing."""
    _validator(MESSAGE_TYPES[0])


def problem_list(problems: list[Problem]) -> list[dict[str, str]]:
    """Problems as JSON: [{"path": ..., "reason": ...}]."""
    return [{"path": p.path, "reason": p.reason} for p in problems]


def validate(doc: Mapping[str, Any], msg_type: str | None = None) -> list[Problem]:
    """Every way `doc` misses its type's schema (the type from `headers.type` unless given);
    empty when it matches."""
    if msg_type is None:
        headers = doc.get("headers")
        msg_type = headers.get("type") if isinstance(headers, Mapping) else None
        if msg_type not in MESSAGE_TYPES:
            return [Problem("$.headers.type", f"{msg_type!r} is not a message type ({', '.join(MESSAGE_TYPES)})")]
    validator = _validator(msg_type)
    errors = sorted(validator.iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [Problem(json_path(e.absolute_path), _short(e.message)) for e in errors]


def _short(text: str, limit: int = 200) -> str:
    """A reason quotes the value; a 20 MB value is cut."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
