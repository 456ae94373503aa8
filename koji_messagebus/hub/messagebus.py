"""Koji hub plugin `messagebus` (Plugins = messagebus in hub.conf).

The hub loads this file by name from its PluginPath; the plugin itself is the installed
`koji_messagebus` package.  Configuration: /etc/koji-hub/plugins/messagebus.conf.
"""

from koji_messagebus.plugin import messagebus_collect, messagebus_send, messagebus_store  # noqa: F401
