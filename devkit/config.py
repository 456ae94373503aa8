"""Config files for tests: a messagebus.conf for the local broker, and a Config for a fake one."""

from __future__ import annotations

import os
import time

from devkit.brokers import target
from koji_messagebus.config.settings import load_config


def write_config(path, exchange_name: str = "koji.events", **sections) -> str:
    """Write a messagebus.conf for the run's broker (devkit/brokers.py: KMB_BROKER*); keyword args
    are {section: {key: value}}; a value None leaves the key out."""
    t = target()
    exchange = {"name": exchange_name, "type": "topic"}
    if t.address:
        exchange["address"] = t.address
    values = {
        "broker": {"host": t.host, "port": str(t.port), "auth": "PLAIN", "username": t.user,
                   "password": t.password, "timeout": "5", "connect_timeout": "5", "retry_interval": "30",
                   # never the host's /var/spool: a test's spool is its own
                   "spool_dir": os.path.join(os.path.dirname(os.path.abspath(path)), "spool")},
        "exchange": exchange,
        "topic": {"prefix": "koji.event"},
    }
    for section, keys in sections.items():
        values.setdefault(section, {}).update({k: None if v is None else str(v) for k, v in keys.items()})
    lines = []
    for section, keys in values.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in keys.items() if v is not None]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return str(path)


def make_config(tmp_path, **broker):
    values = {"host": "127.0.0.1", "port": 5999, "username": "u", "password": "p", "timeout": 1.0,
              "connect_timeout": 0.2, "retry_interval": 0.5, "max_pending": 100,
              "spool_dir": tmp_path / "spool", **broker}
    path = tmp_path / "messagebus.conf"
    path.write_text("[broker]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "[exchange]\nname = x\n")
    path.chmod(0o600)
    return load_config(str(path))


def until(cond, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()
