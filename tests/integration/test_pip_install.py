"""pip beside a hub's koji: installing koji-messagebus must never replace or shadow the `koji` the
hub runs on (on a real hub, python3-koji from an RPM).  Offline: our wheel is built here from a
copy of the tree, koji is a tiny stand-in wheel, proton and cffi are repacked from this venv."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
import zipfile

import pytest

from koji_messagebus import __version__, resources
from koji_messagebus.format.messages import MESSAGE_TYPES
from tests.support.packaging import build_wheel, copy_source, fake_wheel, repack_installed, with_dependencies

HUB_KOJI = "1.34.0.post4242"  # "the RPM's koji": a version PyPI never had
NEWER_KOJI = "99.0"  # offered by the index: an eager upgrade would pick it if koji were a dependency
MARKER = "the hub's own koji, installed before koji-messagebus\n"
TIMEOUT = 180


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A find-links directory: our wheel, two koji stand-ins, and proton with its dependencies."""
    base = tmp_path_factory.mktemp("pip")
    links = base / "links"
    links.mkdir()
    ours = build_wheel(copy_source(str(base / "src")), str(links))
    fake_wheel(str(links), "koji", HUB_KOJI, {"koji/__init__.py": f"VERSION = {HUB_KOJI!r}\n",
                                              "koji/MARKER": MARKER})
    fake_wheel(str(links), "koji", NEWER_KOJI, {"koji/__init__.py": f"VERSION = {NEWER_KOJI!r}\n"})
    for project in with_dependencies("python-qpid-proton"):
        repack_installed(str(links), project)
    return {"links": str(links), "wheel": ours, "base": base}


def pip(python: str, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "pip", "--python", python, "--isolated", "--disable-pip-version-check",
                          *args],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def new_venv(path: str) -> str:
    venv.EnvBuilder(with_pip=False, clear=True).create(path)
    return os.path.join(path, "bin", "python")


def distributions(python: str) -> dict[str, str]:
    res = pip(python, "list", "--format=freeze")
    return dict(line.split("==", 1) for line in res.stdout.splitlines() if "==" in line)


def test_the_wheel_asks_for_koji_only_as_an_extra(index):
    with zipfile.ZipFile(index["wheel"]) as zf:
        metadata = zf.read(f"koji_messagebus-{__version__}.dist-info/METADATA").decode()
        names = zf.namelist()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    koji = [r for r in requires if re.split(r"[\s;<>=!\[]", r.split(": ", 1)[1])[0] == "koji"]
    assert 'Requires-Dist: koji; extra == "koji"' in koji
    assert all("; extra == " in r for r in koji), koji  # never unconditional
    assert any(r.startswith("Requires-Dist: python-qpid-proton") and "extra" not in r for r in requires)
    for name in (resources.SAMPLE_CONFIG, resources.SCHEMA):  # what an admin needs ships with it
        assert f"koji_messagebus/data/{name}" in names
    assert "koji_messagebus/hub/messagebus.py" in names
    for msg_type in MESSAGE_TYPES:  # the message contract ships with it (koji-messagebus schema)
        assert f"koji_messagebus/schemas/{msg_type}.json" in names


def test_pip_install_keeps_the_hubs_koji(index):
    python = new_venv(str(index["base"] / "hub-venv"))
    pip(python, "install", "--no-index", "--find-links", index["links"], f"koji=={HUB_KOJI}")
    site = subprocess.run([python, "-c", "import koji, os; print(os.path.dirname(koji.__file__))"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    res = pip(python, "install", "--no-index", "--find-links", index["links"], "--upgrade",
              "--upgrade-strategy", "eager", "koji-messagebus")
    installed = distributions(python)
    assert installed["koji-messagebus"] == __version__, res.stdout
    assert installed["koji"] == HUB_KOJI, res.stdout  # not replaced by the newer one on offer
    assert "koji-99" not in res.stdout and f"koji=={NEWER_KOJI}" not in res.stdout
    with open(os.path.join(site, "MARKER")) as fh:
        assert fh.read() == MARKER
    kmb = os.path.join(os.path.dirname(python), "koji-messagebus")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KOJI_MESSAGEBUS_CONFIG")}
    out = subprocess.run([kmb, "sample-config"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == resources.read(resources.SAMPLE_CONFIG)
    schema = subprocess.run([kmb, "outbox", "schema"], capture_output=True, text=True, timeout=60, env=env)
    assert schema.returncode == 0 and resources.read(resources.SCHEMA).rstrip() in schema.stdout, schema.stderr


def test_without_koji_pip_installs_no_koji(index):
    python = new_venv(str(index["base"] / "plain-venv"))
    pip(python, "install", "--no-index", "--find-links", index["links"], "koji-messagebus")
    assert "koji" not in distributions(python)
    pip(python, "install", "--no-index", "--find-links", index["links"], "koji-messagebus[koji]")
    assert distributions(python)["koji"] == NEWER_KOJI  # the extra is how a non-hub machine asks for it
