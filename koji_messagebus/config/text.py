"""Problems with the text of a config file, one line each: the file, the line, the section and
key there, and the fix.

configparser's own errors span several lines, quote the offending line (which may hold the
password) and name no fix; a decoding error names a byte offset.  Nothing here echoes a value.
"""

from __future__ import annotations

import configparser
import difflib
import re
from collections.abc import Iterable, Iterator

SAMPLE = "`koji-messagebus sample-config` prints every key with its section"
_SECTION = re.compile(r"\s*\[([^\]]*)\]")
_KEY = re.compile(r"\s*([^\s=:#;][^=:]*?)\s*[=:]")


def _lines(text: str) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, section, key) of each line, as configparser reads them (keys lower-cased)."""
    section: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        head = _SECTION.match(line)
        if head and not line[:1].isspace():
            section = head.group(1)
            yield number, section, None
            continue
        key = _KEY.match(line) if not line[:1].isspace() else None
        yield number, section, key.group(1).lower() if key else None


def where(text: str, number: int) -> str:
    """' ([broker] username)' for a line inside a section, naming its key when it has one."""
    for n, section, key in _lines(text):
        if n == number:
            if section is None:
                return ""
            return f" ([{section}]{' ' + key if key else ''})"
    return ""


def section_line(text: str, section: str) -> int | None:
    return next((n for n, s, k in _lines(text) if s == section and k is None), None)


def not_utf8(path: str, exc: UnicodeDecodeError) -> str:
    data = bytes(exc.object)
    number = data[:exc.start].count(b"\n") + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    text = data.decode("utf-8", "replace")
    return (f"{path}: line {number}{where(text, number)}: not UTF-8 (byte 0x{data[exc.start]:02x} at column "
            f"{column}); fix: save it as UTF-8")


def too_large(path: str, size: int, limit: int, env_var: str) -> str:
    return (f"{path}: cannot be read: it is {size} bytes, more than a config file may hold ({limit} bytes), "
            f"so it is not messagebus.conf; fix: point {env_var} at the plugin's config file ({SAMPLE}, a few KB)")


def syntax_problems(path: str, exc: configparser.Error, text: str, sections: dict[str, list[str]]) -> list[str]:
    """configparser's error, as one line per problem; `sections`: section -> its keys."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        match = _KEY.match(exc.line)
        key = match.group(1).lower() if match else None
        owners = [s for s, keys in sections.items() if key in keys]
        header = f"[{owners[0]}]" if len(owners) == 1 else "its section (" + ", ".join(f"[{s}]" for s in sections) + ")"
        what = f"{key} comes before any section" if key else "text before any section"
        return [f"{path}: line {exc.lineno}: {what}; fix: put {header} on a line above it ({SAMPLE})"]
    if isinstance(exc, configparser.DuplicateOptionError):
        return [f"{path}: line {exc.lineno}: [{exc.section}] {exc.option} is set twice; fix: keep only one of them"]
    if isinstance(exc, configparser.DuplicateSectionError):
        return [f"{path}: line {exc.lineno}: [{exc.section}] appears twice; fix: merge the two into one section"]
    if isinstance(exc, configparser.ParsingError):
        return [f"{path}: line {number}{where(text, number)}: not a `key = value` line; fix: write it as "
                "key = value, or start it with # to make it a comment" for number, _line in exc.errors]
    return [f"{path}: cannot be read: {' '.join(str(exc).split())}"]


def unknown_section(path: str, text: str, section: str, keys: Iterable[str], sections: dict[str, list[str]]) -> str:
    """A section with keys that the plugin does not know: probably misspelt."""
    keys = list(keys)
    guess = difflib.get_close_matches(section.lower(), list(sections), n=1, cutoff=0.6)
    if not guess:  # by its keys: the one section that has them all
        guess = [s for s, known in sections.items() if all(k in known for k in keys)][:1]
    line = section_line(text, section)
    at = f"line {line}: " if line else ""
    held = f"holding {', '.join(keys)}"
    if guess:
        return (f"{path}: {at}unknown section [{section}] ({held}); did you mean [{guess[0]}]? "
                f"fix: rename it [{guess[0]}]")
    return (f"{path}: {at}unknown section [{section}] ({held}); fix: rename it to one of "
            f"{', '.join(f'[{s}]' for s in sections)}, or remove it")


def empty(path: str) -> str:
    return (f"{path}: line 1: the file holds no settings (it is empty or only comments); fix: write [broker] with "
            f"username and password (or password_file), {SAMPLE}")
