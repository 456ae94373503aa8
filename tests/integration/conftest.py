"""Fixtures shared by the integration tests."""

from tests.support.outbox_db import db, schema  # noqa: F401 - pytest finds fixtures by name here
