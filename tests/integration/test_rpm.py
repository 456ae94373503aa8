"""The RPM, as a Koji admin installs it: built here from koji-messagebus.spec (scripts/build-rpm.sh),
its file list, modes, owners and requirements read back with rpm, then installed into a scratch
root, where koji's own PluginTracker loads the shim and the installed command runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from koji_messagebus import __version__, resources
from tests.support.packaging import ROOT

pytestmark = pytest.mark.skipif(not shutil.which("rpmbuild"), reason="rpmbuild is not installed (Debian: rpm)")

PLUGIN = "/usr/lib/koji-hub-plugins/messagebus.py"
STATUS_DIR = "/run/koji-messagebus"  # [status] dir's default, created at boot by the tmpfiles.d entry
SPOOL_DIR = "/var/spool/koji-messagebus"  # [broker] spool_dir's default: messages held at exit
CONF = resources.RPM_PATHS[resources.SAMPLE_CONFIG]
SCHEMA = resources.RPM_PATHS[resources.SCHEMA]
SERVICE = resources.RPM_PATHS[resources.FLUSH_SERVICE]
TIMER = resources.RPM_PATHS[resources.FLUSH_TIMER]
BIN = "/usr/bin/koji-messagebus"
SITELIB = re.compile(r"^/usr/lib/python3\.\d+/site-packages$")
TIMEOUT = 300


def rpm(*args: str) -> str:
    res = subprocess.run(["rpm", *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("rpms")
    res = subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-rpm.sh"), str(out)], capture_output=True,
                         text=True, timeout=TIMEOUT, env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 0, res.stdout + res.stderr
    paths = res.stdout.split()
    assert [os.path.basename(p) for p in paths] == [f"koji-messagebus-{__version__}-1.noarch.rpm",
                                                    f"koji-messagebus-{__version__}-1.src.rpm"]
    return paths[0]


@pytest.fixture(scope="module")
def files(built) -> list[str]:
    return rpm("-qlp", built).split()


@pytest.fixture(scope="module")
def sitelib(files) -> str:
    (init,) = [f for f in files if f.endswith("/koji_messagebus/__init__.py")]
    site = os.path.dirname(os.path.dirname(init))
    assert SITELIB.match(site), site  # the system site-packages, as %{python3_sitelib} on Fedora
    return site


def test_file_list(files, sitelib):
    for path in (PLUGIN, CONF, SCHEMA, SERVICE, TIMER, BIN, f"{sitelib}/koji_messagebus/hub/messagebus.py",
                 f"{sitelib}/koji_messagebus/data/messagebus.conf",
                 f"{sitelib}/koji_messagebus/data/messagebus-schema.sql",
                 f"{sitelib}/koji_messagebus/data/koji-messagebus-flush.timer",
                 f"{sitelib}/koji_messagebus/schemas/Tag.json",
                 f"{sitelib}/koji_messagebus/cli/__init__.py", "/usr/share/doc/koji-messagebus/README.md",
                 "/usr/share/licenses/koji-messagebus/LICENSE"):
        assert path in files, path
    assert not [f for f in files if "/tests/" in f or "/bench/" in f]
    outside = {f for f in files if not f.startswith((sitelib, "/usr/share/doc/", "/usr/share/licenses/"))}
    assert outside == {PLUGIN, CONF, SCHEMA, SERVICE, TIMER, BIN, "/usr/lib/koji-hub-plugins",
                       "/etc/koji-hub/plugins", "/usr/share/koji-messagebus", STATUS_DIR, SPOOL_DIR,
                       *(resources.RPM_PATHS[n] for n in (resources.METRICS_SERVICE, resources.METRICS_TIMER,
                                                          resources.TMPFILES))}


def test_requires(built):
    requires = {line.split()[0] for line in rpm("-qp", "--requires", built).splitlines()}
    assert {"koji-hub", "python3-qpid-proton"} <= requires
    assert not {r for r in requires if "pika" in r or "psycopg2" in r or r == "koji"}, requires


def test_modes_owners_and_config_flags(built):
    dump = {}
    for line in rpm("-qp", "--dump", built).splitlines():
        path, _size, _mtime, _digest, mode, owner, group, isconfig, *_ = line.split()
        dump[path] = (mode, owner, group, isconfig)
    assert dump[CONF] == ("0100640", "root", "apache", "1")  # the hub (apache) reads it, nobody else
    for path in (PLUGIN, SCHEMA, SERVICE, TIMER):
        assert dump[path] == ("0100644", "root", "root", "0"), path
    assert dump[BIN] == ("0100755", "root", "root", "0")
    for name in (resources.METRICS_SERVICE, resources.METRICS_TIMER, resources.TMPFILES):
        assert dump[resources.RPM_PATHS[name]] == ("0100644", "root", "root", "0"), name
    assert dump[STATUS_DIR] == ("040750", "apache", "apache", "0")  # the status files: the hub writes, root reads
    assert dump[SPOOL_DIR] == ("040750", "apache", "apache", "0")  # the spool: the hub writes and reads
    flags = dict(line.split() for line in rpm("-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", built)
                 .splitlines() if len(line.split()) == 2)
    assert set(flags[CONF]) >= {"c", "n"}  # %config(noreplace): an upgrade keeps the admin's edits


@pytest.mark.skipif(os.geteuid() != 0, reason="rpm --root needs root to set owners")
def test_install_into_a_scratch_root(built, sitelib, tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    rpm("--root", root, "--initdb")
    rpm("--root", root, "--nodeps", "-i", built)
    assert oct(os.stat(root + CONF).st_mode & 0o777) == "0o640"
    import koji
    import proton

    # the scratch root's site-packages first, then only what the hub's Python would have: koji, proton
    deps = sorted({os.path.dirname(os.path.dirname(m.__file__)) for m in (koji, proton)})
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join([root + sitelib, *deps]),
           "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    load = (f"import koji.plugin, koji_messagebus\n"
            f"m = koji.plugin.PluginTracker(path=[{root + '/usr/lib/koji-hub-plugins'!r}]).load('messagebus')\n"
            "cbs = sorted({cb for v in vars(m).values() for cb in getattr(v, 'callbacks', ())})\n"
            "print(koji_messagebus.__file__); print(' '.join(cbs))\n")
    res = subprocess.run([sys.executable, "-S", "-c", load], capture_output=True, text=True, env=env, timeout=60,
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    module_file, callbacks = res.stdout.splitlines()
    assert module_file == f"{root}{sitelib}/koji_messagebus/__init__.py"
    assert {"postTag", "preCommit", "postCommit"} <= set(callbacks.split())

    def command(*args: str) -> str:
        out = subprocess.run([sys.executable, "-S", root + BIN, *args], capture_output=True, text=True, env=env,
                             timeout=60, cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr
        return out.stdout

    with open(root + CONF) as fh:
        assert command("sample-config") == fh.read()
    with open(root + SCHEMA) as fh:
        assert command("outbox", "schema").startswith(fh.read())
    if shutil.which("systemd-analyze"):
        units = tmp_path / "units"
        units.mkdir()
        for unit in (SERVICE, TIMER):  # ExecStart pointed into the scratch root, so that it exists
            with open(root + unit) as fh:
                (units / os.path.basename(unit)).write_text(fh.read().replace(f"ExecStart={BIN}",
                                                                             f"ExecStart={root}{BIN}"))
        res = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, sorted(units.iterdir()))],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and not res.stderr.strip(), res.stderr


@pytest.mark.skipif(not shutil.which("rpmlint"), reason="rpmlint is not installed (Debian: rpmlint)")
def test_rpmlint_finds_no_error(built):
    """The binary and source RPMs and the spec, with the project's filters (koji-messagebus.rpmlintrc,
    each one explained there): warnings are allowed, errors are not."""
    srpm = built.replace(".noarch.rpm", ".src.rpm")
    res = subprocess.run(["rpmlint", "-r", os.path.join(ROOT, "koji-messagebus.rpmlintrc"), built, srpm,
                          os.path.join(ROOT, "koji-messagebus.spec")], capture_output=True, text=True, timeout=TIMEOUT)
    errors = [line for line in res.stdout.splitlines() if ": E: " in line]
    assert res.returncode == 0 and not errors, res.stdout + res.stderr
    assert " 0 errors" in res.stdout
