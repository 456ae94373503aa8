"""Broker conditions become typed, one-line errors (amqp.diagnose is pure: no broker needed)."""

from __future__ import annotations

from proton import SASL

from koji_messagebus.amqp import BrokerError, Kind
from koji_messagebus.amqp.diagnose import Auth, Exchange, remote_closed, stage, transport_failed
from koji_messagebus.config.sections import Endpoint

EP = Endpoint("broker.example.com", 5672, False)
V1 = Exchange("koji.events", "topic", True, "/exchange/koji.events")


def test_kinds_say_which_are_final():
    assert {k.value for k in Kind if k.final} == {"not-found", "refused"}
    err = BrokerError("auth", "x")
    assert err.kind is Kind.AUTH and err.kind == "auth" and str(err.kind) == "auth" and not err.final


def test_missing_exchange_on_rabbitmq3_names_it_and_the_fix():
    err = remote_closed("the broker ended the session for", "amqp:not-found",
                        "NOT_FOUND - no exchange 'koji.events' in vhost '/'", EP, V1)
    assert err.kind is Kind.NOT_FOUND and err.final
    assert str(err) == ("exchange 'koji.events' (address /exchange/koji.events) does not exist on broker "
                        "broker.example.com:5672: NOT_FOUND - no exchange 'koji.events' in vhost '/'. RabbitMQ 3.x "
                        "cannot create exchanges over AMQP 1.0; declare it on the broker's host: rabbitmqctl eval "
                        "'rabbit_exchange:declare(rabbit_misc:r(<<\"/\">>, exchange, <<\"koji.events\">>), topic, "
                        "true, false, false, [], <<\"rabbitmqctl\">>).'")


def test_no_right_and_other_refusals():
    err = remote_closed("the broker closed the link to", "amqp:unauthorized-access", "write access refused", EP, V1)
    assert err.kind is Kind.REFUSED and "refused access to exchange 'koji.events' for this user" in str(err)
    per_message = Exchange("koji.events", "topic", True, None)
    err = remote_closed("the broker closed the link to", "amqp:precondition-failed", "", EP, per_message)
    assert str(err) == ("the broker closed the link to (per-message addresses) on broker.example.com:5672: "
                        "amqp:precondition-failed")


def test_transport_failures():
    def no_tls(desc: str) -> str:
        raise AssertionError("not a TLS failure")

    err = transport_failed(EP, Auth("PLAIN", "hub"), "", "", SASL.AUTH, "PLAIN", ("PLAIN",), no_tls)
    assert err.kind is Kind.AUTH and "as user 'hub'" in str(err) and "wrong password or unknown user" in str(err)
    err = transport_failed(EP, Auth("SCRAM-SHA-256", "hub"), "", "", SASL.AUTH, "SCRAM-SHA-256", None, no_tls)
    assert "as user 'hub'" in str(err) and "refused the user name and password (SCRAM-SHA-256)" in str(err)
    err = transport_failed(EP, Auth("GSSAPI"), "", "", SASL.AUTH, None, ("ANONYMOUS", "PLAIN"), no_tls)
    assert "does not offer SASL mechanism GSSAPI (it offers ANONYMOUS, PLAIN)" in str(err)
    err = transport_failed(EP, Auth("PLAIN"), "amqp:connection:framing-error", "b'\\x15\\x03'", None, None, None,
                           no_tls)
    assert err.kind is Kind.CONNECTION_LOST and "set ssl = true" in str(err)
    tls_ep = Endpoint("broker.example.com", 5671, True)
    err = transport_failed(tls_ep, Auth("PLAIN"), "amqp:connection:framing-error", "SSL Failure: bad", None, None,
                           None, lambda desc: f"explained: {desc}")
    assert err.kind is Kind.TLS and str(err).endswith("failed: explained: SSL Failure: bad")


def test_stage_of_a_timeout():
    assert stage("x", None, True, 0, False, "PLAIN") == "waiting for the AMQP/TLS handshake (is this an AMQP 1.0 port?)"
    assert stage("x", None, True, 2, False, "PLAIN").startswith("authenticating with PLAIN")
    assert stage("x", SASL.OK, True, 5, False, "PLAIN") == "opening the AMQP connection"
    assert stage("waiting for settlement", SASL.OK, True, 9, True, "PLAIN") == "waiting for settlement"
