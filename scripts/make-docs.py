"""Regenerate the generated parts of README.md (between <!-- NAME:start --> and <!-- NAME:end -->):
the config reference (from config.OPTIONS) and one real example message per event (recorded hub
kwargs from tests/data/hub-callbacks through the message table).
Run: .venv/bin/python scripts/make-docs.py"""

from __future__ import annotations

import json
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from koji_messagebus.config import OPTIONS  # noqa: E402
from koji_messagebus.messages import CALLBACK_TYPES, format_event  # noqa: E402
from tests.fixtures import entries  # noqa: E402

EXAMPLES = {  # which recorded call shows each event best
    "postPackageListChange": 0, "postTaskStateChange": 2, "postBuildStateChange": 1, "postImport": 2,
    "postRPMSign": 4, "postTag": 0, "postUntag": 0, "postRepoInit": 0, "postRepoDone": 0, "postBuildPromote": 0,
}


INCLUDES = {  # README marker -> file whose text goes there
    "brokers": "docs/brokers.md",
    "cli": "docs/cli.md",
    "cookbook": "docs/cookbook.md",
    "security": "docs/security.md",
    "reliability": "docs/reliability.md",
    "bench": "bench/results.md",
}


def config_reference() -> str:
    rows = ["| section | key | default | allowed | meaning |", "|---|---|---|---|---|"]
    for opt in OPTIONS:
        default = opt.default
        if isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, list) or default in (None, ""):
            default = "(empty)" if not default else " ".join(default)
        elif isinstance(default, float) and default.is_integer():
            default = int(default)
        rows.append(f"| `[{opt.section}]` | `{opt.key}` | `{default}` | {opt.allowed} | {opt.doc} |")
    return "\n".join(rows)


def examples() -> str:
    out = []
    for cbtype, index in EXAMPLES.items():
        entry = entries(cbtype)[index]
        event = format_event(CALLBACK_TYPES[cbtype], entry["converted"], "koji.event")
        out.append(f"<details><summary><b>{event.type}</b> — <code>{event.routing_key}</code> "
                   f"(recorded from <code>{entry['api_call']}</code>)</summary>\n")
        out.append("```json")
        out.append(json.dumps({"subject (routing key)": event.routing_key, "application-properties (headers)":
                               event.headers, "body": event.body}, indent=2, default=repr))
        out.append("```\n</details>\n")
    return "\n".join(out)


def demote(markdown: str) -> str:
    """Make a document that starts with `# Title` fit under README's `#`: one level deeper."""
    if not markdown.startswith("# "):
        return markdown
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and line.startswith("#") else line)
    return "\n".join(out)


def replace(text: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:start --> marker")
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)


def main() -> None:
    path = os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    text = replace(text, "config", config_reference())
    text = replace(text, "examples", examples())
    for name, source in INCLUDES.items():
        source = os.path.join(ROOT, source)
        if os.path.exists(source):
            with open(source, encoding="utf-8") as fh:
                text = replace(text, name, demote(fh.read().strip()))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
