"""Marked sections of bench/results.md, so that each benchmark script rewrites only its own part
(bench/run.py the whole file, keeping the sections of bench/concurrency.py and bench/faults.py)."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.md"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench-{name}:start -->", f"<!-- bench-{name}:end -->"


def update(name: str, text: str, path: Path = RESULTS) -> None:
    """Put `text` between the section's markers (appended at the end the first time)."""
    start, end = _markers(name)
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    path.write_text(new)


def kept(path: Path = RESULTS) -> str:
    """Every marked section of the file as it is now (for a script that rewrites the rest)."""
    if not path.exists():
        return ""
    found = re.findall(r"<!-- bench-[\w-]+:start -->.*?<!-- bench-[\w-]+:end -->\n?", path.read_text(), re.S)
    return "".join(found)
