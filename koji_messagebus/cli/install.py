"""`koji-messagebus install-plugin`: put the shim the hub loads by name into its PluginPath."""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import time

from koji_messagebus.cli.common import EXIT_OK, CliError, default_path, out
from koji_messagebus.config.httpd import httpd_group

DEFAULT_PLUGIN_PATH = "/usr/lib/koji-hub-plugins"
HELP = "copy the hub plugin file into the hub's PluginPath"
DESCRIPTION = ("Copy the file the hub loads by name (messagebus.py, a shim importing the koji_messagebus package) "
               "into the hub's PluginPath and say what to add to hub.conf.")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("install-plugin", parents=[parent], help=HELP, description=DESCRIPTION)
    p.add_argument("--plugin-path", metavar="DIR", help=f"the hub's PluginPath (default: {DEFAULT_PLUGIN_PATH})")
    p.add_argument("--force", action="store_true",
                   help="replace an existing, different messagebus.py (kept as messagebus.py.bak-TIME)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from koji_messagebus import hub

    source = os.path.join(os.path.dirname(hub.__file__), "messagebus.py")
    directory = os.path.abspath(args.plugin_path or DEFAULT_PLUGIN_PATH)  # hub.conf needs an absolute path
    target = os.path.join(directory, "messagebus.py")
    if not os.path.isdir(directory):
        how = "check the path" if args.plugin_path else "pass --plugin-path DIR"
        raise CliError(f"plugin directory {directory} does not exist (is koji-hub installed here? its hub.conf "
                       f"names it as PluginPath): {how}")
    backup = None
    if os.path.exists(target):
        if filecmp.cmp(source, target, shallow=False):
            out(f"{target} is already installed and up to date")
            print_enable_hint(directory)
            return EXIT_OK
        if not args.force:
            raise CliError(f"{target} exists and is not this plugin's shim (Koji's legacy messagebus plugin?); "
                           "move it away or pass --force to replace it (the old file is kept as a backup)")
        backup = backup_path(target)
    try:
        if backup:
            shutil.copy2(target, backup)
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename or target}: {exc.strerror} (run as root?)") from None
    if backup:
        out(f"kept the previous {target} as {backup}")
    out(f"installed {target} (imports the plugin from the koji_messagebus package)")
    print_enable_hint(directory)
    return EXIT_OK


def backup_path(target: str) -> str:
    """target.bak-YYYYmmdd-HHMMSS, never an existing file (the hub loads only NAME.py)."""
    base = f"{target}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while os.path.exists(candidate):
        candidate, n = f"{base}.{n}", n + 1
    return candidate


def print_enable_hint(directory: str) -> None:
    out("To enable it, in /etc/koji-hub/hub.conf, section [hub]:")
    out(f"    PluginPath = {directory}")
    out("    Plugins = messagebus        (add it to the space-separated list if there is one)")
    out(f"then write {default_path()} (`koji-messagebus sample-config` prints every key; chown root:{httpd_group()}, "
        "chmod 640), run `koji-messagebus check`, and restart the hub (httpd).")
