"""Writing a messagebus.conf for a unit test and reading its problems back (the config tests share them)."""

from __future__ import annotations

import configparser
import os
import threading

import pytest

from koji_messagebus.config.settings import Config, ConfigError, load_config, parse_config

#: the least a config needs to send (auth = PLAIN)
MINIMAL = "[broker]\nusername = koji\npassword = s3cret\n"


def conf(tmp_path, text: str, mode: int = 0o600) -> str:
    """`text` written as tmp_path/messagebus.conf with `mode`; its path."""
    path = tmp_path / "messagebus.conf"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def parsed(tmp_path, **broker) -> Config:
    """A Config from [broker] keys alone, parsed without a file."""
    parser = configparser.RawConfigParser()
    parser.read_dict({"broker": broker})
    return parse_config(parser, str(tmp_path / "messagebus.conf"))


def keytab(tmp_path) -> str:
    """A file that passes for a keytab (readable, mode 600)."""
    path = tmp_path / "hub.keytab"
    path.write_bytes(b"\x05\x02")
    os.chmod(path, 0o600)
    return str(path)


def problems(path: str, **kw) -> list[str]:
    """The problems load_config(path) raises (it must raise)."""
    with pytest.raises(ConfigError) as err:
        load_config(path, **kw)
    return err.value.problems


def one_line(path: str, **kw) -> str:
    """The one problem of `path`, which names the file and holds no newline."""
    (line,) = problems(path, **kw)
    assert "\n" not in line and line.startswith(f"{path}: ")
    return line


def problems_within(path: str, fifo: str, seconds: float = 5.0) -> list[str]:
    """problems(path), failing (not hanging) if load_config blocks on `fifo` for `seconds`."""
    result: list = []
    reader = threading.Thread(target=lambda: result.append(problems(path)), daemon=True)
    reader.start()
    reader.join(seconds)
    if reader.is_alive():  # unblock the reader that would otherwise hang forever
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        reader.join(seconds)
        pytest.fail(f"load_config blocked on the FIFO {fifo}")
    return result[0]
