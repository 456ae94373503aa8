"""Koji hub plugin `messagebus` (Plugins = messagebus in hub.conf).

The hub loads this file by name from its PluginPath; the plugin itself is the installed
`koji_messagebus` package.  Configuration: /etc/koji-hub/plugins/messagebus.conf.

Loading reads and checks the config at once, so that its errors and warnings reach the hub's
log when the hub starts, not at the first request; nothing connects to the broker here, and
nothing here can stop the hub from loading.
"""

from koji_messagebus.log import log
from koji_messagebus.plugin import messagebus_collect, messagebus_send, messagebus_store  # noqa: F401
from koji_messagebus.plugin import runtime as _runtime

try:
    _runtime()
except Exception:  # noqa: BLE001 - the hub must load; the first request tries again
    log.exception("could not start at load time")
