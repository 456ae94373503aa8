"""What a pip or RPM admin gets: the shipped files are current, and every path or command that
README, the docs, the command's output and the package's log lines name exists for them."""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import io
import os
import re
import stat

import pytest

from koji_messagebus import __version__, cli, resources
from koji_messagebus.cli import install
from koji_messagebus.config.httpd import httpd_group
from koji_messagebus.config.settings import load_config
from koji_messagebus.transaction import outbox
from koji_messagebus.transaction.outbox import SCHEMA

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "koji-messagebus.spec")
PLUGIN = f"{install.DEFAULT_PLUGIN_PATH}/messagebus.py"
#: what the RPM installs (tests/integration/test_rpm.py checks these against `rpm -qlp`)
INSTALLED = {*resources.RPM_PATHS.values(), PLUGIN, "/usr/bin/koji-messagebus",
             "/usr/share/doc/koji-messagebus/README.md", install.DEFAULT_PLUGIN_PATH, "/etc/koji-hub/plugins",
             "/usr/share/koji-messagebus"}
#: where our files live on a hub: a path under one of these must be one we install
OURS = ("/usr/lib/koji-hub-plugins", "/etc/koji-hub/plugins/messagebus.conf", "/usr/share/koji-messagebus",
        "/usr/lib/systemd/system/koji-messagebus", "/usr/share/doc/koji-messagebus", "/usr/bin/koji-messagebus")
#: files of a source checkout that a pip or RPM user does not have
CHECKOUT_ONLY = re.compile(r"(?<![\w/.-])(?:conf|scripts|bench|tests|docs)/[\w.-]+")
ABSOLUTE = re.compile(r"(?<![\w.-])/(?:etc|usr)/[\w./-]*[\w-]")
COMMAND = re.compile(r"`koji-messagebus((?: --?[\w-]+(?: [\w./=-]+)?)*) ([a-z][\w-]*)(?: ([a-z][\w-]*))?")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), os.path.join(ROOT, "scripts", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def help_texts() -> dict[str, str]:
    """`--help` of every command, as a user sees it."""
    texts = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        texts[name] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")

    walk(cli.build_parser(), "koji-messagebus")
    return texts


def shipped_texts() -> dict[str, str]:
    """README, the docs, the package's sources (its messages and log lines), the shipped data, --help."""
    paths = [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True),
             *glob.glob(os.path.join(ROOT, "koji_messagebus", "**", "*.py"), recursive=True),
             *glob.glob(os.path.join(ROOT, "koji_messagebus", "data", "*"))]
    texts = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            texts[os.path.relpath(path, ROOT)] = fh.read()
    texts.update(help_texts())
    return texts


def commands() -> set[tuple[str, ...]]:
    found = set()

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.add((*prefix, name))
                    walk(sub, (*prefix, name))

    walk(cli.build_parser(), ())
    return found


# ---- the shipped files -------------------------------------------------------------------------
def test_shipped_sample_config_is_current():
    assert resources.read(resources.SAMPLE_CONFIG) == load_script("make-sample-conf.py").sample(), \
        "run .venv/bin/python scripts/make-sample-conf.py"
    assert resources.read(resources.SCHEMA) == SCHEMA


def test_conf_and_the_package_data_built_from_it_are_identical():
    """conf/ is where the plugin's config and the outbox schema live; the package carries copies
    (koji_messagebus/data/, setup.py's build copies conf/ over them)."""
    for name in (resources.SAMPLE_CONFIG, resources.SCHEMA):
        with open(os.path.join(ROOT, "conf", name)) as fh:
            assert fh.read() == resources.read(name), f"conf/{name} differs: run scripts/make-sample-conf.py"


def test_the_sample_config_is_valid_and_tells_how_to_protect_it(tmp_path):
    text = resources.read(resources.SAMPLE_CONFIG)
    path = tmp_path / "messagebus.conf"
    path.write_text(text.replace("/etc/koji-hub/plugins/messagebus.password", str(tmp_path / "pw")))
    (tmp_path / "pw").write_text("secret\n")
    os.chmod(tmp_path / "pw", 0o640)
    load_config(str(path))  # valid as shipped (but for the password file it names)
    assert "chown root:apache" in text and "chmod 640" in text and "chmod 600" not in text
    for line in outbox.grants("koji").splitlines():
        assert f"#   {line}" in text


def test_spec_version_is_the_package_version():
    with open(SPEC) as fh:
        versions = re.findall(r"^Version:\s*(\S+)", fh.read(), re.M)
    assert versions == [__version__]


def test_spec_installs_every_shipped_file():
    with open(SPEC) as fh:
        spec = fh.read()
    conf = set(os.listdir(os.path.join(ROOT, "conf")))
    for name in os.listdir(resources.DATA_DIR):  # the files that live in conf/ are installed from there
        assert f"{'conf' if name in conf else 'koji_messagebus/data'}/{name}" in spec, name
    for unit in (resources.FLUSH_SERVICE, resources.FLUSH_TIMER, resources.METRICS_SERVICE, resources.METRICS_TIMER):
        assert f"%{{_unitdir}}/{unit}" in spec
    # shipped disabled: the presets apply, nothing enables them
    assert "%systemd_post koji-messagebus-flush.timer koji-messagebus-metrics.timer" in spec
    assert "%{_tmpfilesdir}/koji-messagebus.conf" in spec
    assert "%config(noreplace) %attr(0640, root, apache) %{conf_dir}/messagebus.conf" in spec
    assert re.search(r"^Requires:\s+koji-hub$", spec, re.M) and re.search(r"^Requires:\s+python3-qpid-proton$",
                                                                          spec, re.M)


def test_flush_units_run_the_flush_command_as_the_hub():
    service = resources.read(resources.FLUSH_SERVICE)
    assert "ExecStart=/usr/bin/koji-messagebus outbox flush\n" in service
    assert "User=apache\n" in service and "Type=oneshot\n" in service
    timer = resources.read(resources.FLUSH_TIMER)
    assert "[Timer]" in timer and "WantedBy=timers.target" in timer


def test_metrics_units_write_the_prometheus_status_atomically_as_the_hub():
    service = resources.read(resources.METRICS_SERVICE)
    (start,) = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    args = start.split("=", 1)[1].split()
    assert args[:4] == ["/usr/bin/koji-messagebus", "status", "--format", "prometheus"]
    assert args[4] == "--output" and args[5].startswith("/var/lib/node_exporter/textfile_collector/")
    assert f"ReadWritePaths={os.path.dirname(args[5])}\n" in service
    assert cli.build_parser().parse_args(args[1:]).output == args[5]  # the command takes exactly these
    assert "User=apache\n" in service and "Type=oneshot\n" in service and "SuccessExitStatus=1 2\n" in service
    timer = resources.read(resources.METRICS_TIMER)
    assert "[Timer]" in timer and "WantedBy=timers.target" in timer
    tmpfiles = resources.read(resources.TMPFILES)
    from koji_messagebus.config.options import OPTIONS

    (default_dir,) = [o.default for o in OPTIONS if (o.section, o.key) == ("status", "dir")]
    assert f"d {default_dir} 0750 apache apache -" in tmpfiles


def test_cli_prints_the_shipped_files(capsys):
    assert cli.main(["sample-config"]) == 0
    assert capsys.readouterr().out == resources.read(resources.SAMPLE_CONFIG)
    assert cli.main(["outbox", "schema"]) == 0
    assert capsys.readouterr().out == resources.read(resources.SCHEMA)
    assert cli.main(["outbox", "schema", "--grant-to", "kojihub"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(resources.read(resources.SCHEMA))
    assert out.endswith(outbox.grants("kojihub"))
    assert cli.main(["outbox", "schema", "--grant-to", "koji; DROP TABLE x"]) == 2


# ---- every path and command named exists for a pip or RPM user ------------------------------------
def test_no_message_points_into_a_source_checkout():
    """The package's messages, log lines, --help and shipped files never name conf/, scripts/ ...:
    README may (it is read in the checkout too), but only for the checkout's own scripts."""
    bad = []
    for name, text in shipped_texts().items():
        if name == "README.md" or name.startswith("docs/"):
            found = [m for m in re.findall(r"(?<![\w/.-])conf/[\w.-]+", text)]
        elif name.startswith("koji_messagebus/") and name.endswith(".py"):
            # docstrings and comments may cite the tests that prove a claim; strings the user sees may not
            found = [m for m in CHECKOUT_ONLY.findall(_strings(text)) if not m.startswith("tests/")]
        else:
            found = CHECKOUT_ONLY.findall(text)
        bad += [f"{name}: {m}" for m in found]
    assert not bad, bad


def test_every_installed_path_named_is_installed():
    bad = []
    for name, text in shipped_texts().items():
        for path in ABSOLUTE.findall(text):
            path = path.rstrip(".")
            if path.startswith(OURS) and path not in INSTALLED:
                bad.append(f"{name}: {path}")
    assert not bad, bad


def test_every_command_named_exists():
    known = commands()
    bad = []
    for name, text in shipped_texts().items():
        for _options, first, second in COMMAND.findall(text):
            if (first,) not in known:
                bad.append(f"{name}: koji-messagebus {first}")
            elif any(c[0] == first and len(c) == 2 for c in known) and second and (first, second) not in known:
                bad.append(f"{name}: koji-messagebus {first} {second}")
    assert not bad, bad


def test_install_page_grants_are_the_outbox_grants():
    with open(os.path.join(ROOT, "docs", "install.md"), encoding="utf-8") as fh:
        section = fh.read()
    assert outbox.grants("koji").strip() in section
    assert "koji-messagebus outbox init" in section and "koji-messagebus-flush.timer" in section
    assert "rabbitmqadmin" not in section  # needs the management plugin


# ---- permission advice -------------------------------------------------------------------------
@pytest.mark.parametrize("mode, warned", [(0o640, False), (0o600, False), (0o644, True), (0o604, True)])
def test_secret_file_modes(tmp_path, mode, warned):
    path = tmp_path / "messagebus.conf"
    path.write_text("[broker]\nusername = koji\npassword = secret\n")
    os.chmod(path, mode)
    warnings = [w for w in load_config(str(path)).warnings if "readable by other users" in w]
    assert bool(warnings) == warned, warnings
    if warned:
        assert f"chown root:{httpd_group()} {path} && chmod 640 {path}" in warnings[0]
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def _strings(source: str) -> str:
    """The string literals of a module that are not docstrings (what can reach a user)."""
    import ast

    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    out = io.StringIO()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            with contextlib.suppress(Exception):
                out.write(node.value + "\n")
    return out.getvalue()


def test_schema_file_matches_code():
    with open(os.path.join(ROOT, "koji_messagebus", "data", "messagebus-schema.sql")) as fh:
        assert fh.read() == SCHEMA
