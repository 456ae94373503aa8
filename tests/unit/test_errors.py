"""One base class with families, and the one way to show an exception's first line."""

from __future__ import annotations

import pytest

from koji_messagebus.amqp.errors import BrokerError
from koji_messagebus.cli.common import CliError
from koji_messagebus.config.hubconf import HubConfigError
from koji_messagebus.config.settings import ConfigError
from koji_messagebus.errors import (
    BusError,
    CommandError,
    MessagebusError,
    MessageError,
    OutboxError,
    SettingsError,
    first_line,
)
from koji_messagebus.kerberos import KerberosError
from koji_messagebus.rabbitmq import DeclareError
from koji_messagebus.schema import SchemaError
from koji_messagebus.transaction.outbox import OutboxUnavailable


@pytest.mark.parametrize(("error", "family"), [
    (ConfigError("x.conf", ["bad"]), SettingsError), (HubConfigError("no hub.conf"), SettingsError),
    (BrokerError("auth", "refused"), BusError), (KerberosError("no ticket"), BusError),
    (DeclareError("no"), BusError), (OutboxUnavailable("no table"), OutboxError),
    (SchemaError("no schema"), MessageError), (CliError("usage"), CommandError),
])
def test_every_error_belongs_to_one_family_under_the_base(error, family):
    assert isinstance(error, family) and isinstance(error, MessagebusError)


def test_first_line_of_an_empty_message_is_the_class_name_not_an_index_error():
    """The bug: three copies did str(exc).strip().splitlines()[0], an IndexError on an empty message."""
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(RuntimeError("  \n ")) == "RuntimeError"


def test_first_line_drops_what_follows_the_first_line():
    assert first_line(RuntimeError("  duplicate key\nDETAIL: Key (payload)=(\\x00...)")) == "duplicate key"
