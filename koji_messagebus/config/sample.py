"""The documented sample config rendered from OPTIONS (conf/messagebus.conf is built on it)."""

from __future__ import annotations

from koji_messagebus.config.options import OPTIONS


def render_sample() -> str:
    """The documented sample config: every key with its default (data/messagebus.conf is built on it)."""
    lines = []
    section = None
    for opt in OPTIONS:
        if opt.section != section:
            section = opt.section
            lines.append(f"\n[{section}]")
        lines.append(f"# {opt.doc}")
        lines.append(f"# Allowed: {opt.allowed}.")
        default = opt.default
        if isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, list):
            default = " ".join(default)
        elif default is None:
            default = ""
        elif isinstance(default, float) and default.is_integer():
            default = int(default)
        lines.append(f"#{opt.key} = {default}")
    return "\n".join(lines).lstrip() + "\n"
