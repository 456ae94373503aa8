"""Config-side files are read safely: a FIFO, a directory or a huge file is refused at once, in one line."""

from __future__ import annotations

import os

from tests.support.conffile import MINIMAL, conf, one_line, problems, problems_within


def test_a_fifo_as_config_is_refused_at_once(tmp_path):
    fifo = str(tmp_path / "messagebus.conf")
    os.mkfifo(fifo)
    (line,) = problems_within(fifo, fifo)
    assert line.startswith(f"{fifo}: cannot be read") and "FIFO" in line and "regular file" in line


def test_a_directory_as_config_is_refused(tmp_path):
    (line,) = problems(str(tmp_path))
    assert "a directory, not a regular file" in line


def test_a_fifo_as_password_file_is_refused(tmp_path):
    fifo = str(tmp_path / "pw")
    os.mkfifo(fifo)
    path = conf(tmp_path, f"[broker]\nusername = koji\npassword_file = {fifo}\n")
    line = problems_within(path, fifo)[0]
    assert "[broker] password_file" in line and "FIFO" in line


def test_a_huge_file_is_not_called_the_wrong_kind_of_file(tmp_path):
    path = tmp_path / "messagebus.conf"
    path.write_bytes(MINIMAL.encode() + b"#" * (10 << 20))
    line = one_line(str(path))
    assert f"it is {len(MINIMAL) + (10 << 20)} bytes, more than a config file may hold" in line
    assert "the config file itself" not in line and "fix: point KOJI_MESSAGEBUS_CONFIG at" in line
