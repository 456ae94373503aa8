"""httpd.httpd_group: the group named in permission advice is one that exists on the machine."""

from __future__ import annotations

import grp

import pytest

from koji_messagebus.config import httpd


@pytest.fixture
def groups(monkeypatch):
    """The machine's group database, as the test sets it (grp is the OS's, not ours to change)."""
    present: set[str] = set()

    def getgrnam(name):
        if name not in present:
            raise KeyError(name)
        return grp.struct_group((name, "x", 48, []))

    monkeypatch.setattr(httpd.grp, "getgrnam", getgrnam)
    return present


@pytest.mark.parametrize("present, debian, expected", [
    ({"apache"}, False, "apache"),  # Fedora / EL
    ({"www-data"}, True, "www-data"),  # Debian / Ubuntu
    ({"www-data"}, False, "www-data"),  # a Debian-like system without the marker
    ({"apache", "www-data"}, True, "www-data"),  # both: the system's own convention first
    ({"apache", "www-data"}, False, "apache"),
    (set(), False, "apache"),  # neither (a build host): the RPM's group
])
def test_the_httpd_group_is_one_that_exists(groups, tmp_path, present, debian, expected):
    groups.update(present)
    marker = tmp_path / "debian_version"
    if debian:
        marker.write_text("12.0\n")
    assert httpd.httpd_group(str(marker)) == expected


def test_install_hint_and_permission_advice_name_this_machines_group(tmp_path, capsys):
    from koji_messagebus.cli import install
    from koji_messagebus.config.settings import load_config

    install.print_enable_hint("/usr/lib/koji-hub-plugins")
    assert f"chown root:{httpd.httpd_group()}," in capsys.readouterr().out
    conf = tmp_path / "messagebus.conf"
    conf.write_text("[broker]\nusername = koji\npassword = secret\n")
    conf.chmod(0o644)
    warning = [w for w in load_config(str(conf)).warnings if "readable by other users" in w][0]
    assert f"chown root:{httpd.httpd_group()} {conf}" in warning
