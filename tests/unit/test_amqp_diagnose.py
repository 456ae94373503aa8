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


# ---- the broker's own words, decoded (exact descriptions seen on RabbitMQ 3.10.8 and 4.0.5) ----
#: `rabbitmqctl close_all_connections hello` on RabbitMQ 3.10.8: the session ends with amqp:internal-error
FORCED_3 = "{shutdown,{connection_closing,{server_initiated_close,320,<<104,101,108,108,111>>}}}"
#: ... with "maintenance, back at 10:00 — sorry" (UTF-8)
FORCED_3_UTF8 = ("{shutdown,{connection_closing,{server_initiated_close,320,<<109,97,105,110,116,101,110,97,110,99,"
                 "101,44,32,98,97,99,107,32,97,116,32,49,48,58,48,48,32,226,128,148,32,115,111,114,114,121>>}}}")
#: RabbitMQ 4.0.5 closes the connection with amqp:internal-error
FORCED_4 = 'Connection forced: <<"hello">>'


def test_a_forced_close_reads_as_text_and_is_a_lost_connection_not_a_verdict():
    from koji_messagebus.amqp.diagnose import forced_close

    assert forced_close(FORCED_3) == "CONNECTION_FORCED - hello"
    assert forced_close(FORCED_3_UTF8) == "CONNECTION_FORCED - maintenance, back at 10:00 \u2014 sorry"
    assert forced_close("{shutdown,{connection_closing,{server_initiated_close,320,<<>>}}}") == "CONNECTION_FORCED"
    assert forced_close(FORCED_4) == "CONNECTION_FORCED - hello"
    shutdown = ("{shutdown,{connection_closing,{server_initiated_close,320,<<\"CONNECTION_FORCED - broker forced "
                "connection closure with reason 'shutdown'\">>}}}")
    assert forced_close(shutdown) == "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    assert forced_close("{shutdown,{server_initiated_close,404,<<78,79>>}}") == "NOT_FOUND - NO"
    assert forced_close("NOT_FOUND - no exchange 'x' in vhost '/'") is None and forced_close("") is None
    for what, desc in (("the broker ended the session for", FORCED_3),
                       ("the broker closed the connection to", FORCED_4)):
        err = remote_closed(what, "amqp:internal-error", desc, EP, V1)
        assert err.kind is Kind.CONNECTION_LOST and not err.final
        assert str(err) == "connection to broker.example.com:5672 closed by the broker: CONNECTION_FORCED - hello"


def test_erlang_binaries_in_other_descriptions_are_decoded_boundedly_and_odd_ones_kept():
    from koji_messagebus.amqp.diagnose import MAX_DESCRIPTION, erlang_text

    assert erlang_text("{badmatch,<<104,105>>}") == '{badmatch,"hi"}'
    assert erlang_text('<<"a\\"b">> and <<>>') == '"a\\"b" and ""'
    assert erlang_text('x <<34,92>>') == 'x "\\"\\\\"'  # a quote and a backslash, escaped
    for odd in ("<<300,1>>", "<<255,254>>", "<<0,1>>", "<<1,2", "<<>", "plain text"):
        assert erlang_text(odd) == odd
    assert erlang_text("a\n  b\tc") == "a b c"
    long = erlang_text("<<" + ",".join(["65"] * 5000) + ">>" + "x" * 10000)
    assert len(long) == MAX_DESCRIPTION and long.endswith("...")
    err = remote_closed("the broker ended the session for", "amqp:internal-error",
                        "{{badmatch,{error,<<114,101,106,101,99,116>>}},[]}", EP, V1)
    assert err.kind is Kind.REFUSED
    assert str(err).endswith(': amqp:internal-error {{badmatch,{error,"reject"}},[]}')


def test_a_frozen_broker_is_told_from_a_port_that_speaks_something_else():
    from koji_messagebus.amqp.diagnose import timed_out

    err = timed_out(EP, "waiting for the AMQP/TLS handshake (is this an AMQP 1.0 port?)", heard=False, waited=5.02)
    assert err.kind is Kind.TIMEOUT
    assert str(err) == ("broker broker.example.com:5672 accepted the connection but did not answer within 5 s "
                        "(frozen or overloaded?)")
    assert str(timed_out(EP, "opening", heard=False, waited=0.25)).endswith("within 0.2 s (frozen or overloaded?)")
    assert str(timed_out(EP, "waiting for settlement", heard=True, waited=9)) == (
        "broker broker.example.com:5672 did not answer within the timeout while waiting for settlement")

    def no_tls(desc: str) -> str:
        raise AssertionError("not a TLS failure")

    http = "Expected SASL protocol header got: Unknown protocol ['HTTP/1.1 400 Bad Request\\x0d\\x0a\\x0d\\x0a']"
    err = transport_failed(EP, Auth("PLAIN"), "amqp:connection:framing-error", http, None, None, None, no_tls)
    assert err.kind is Kind.CONNECTION_LOST
    assert str(err).endswith("(the peer sent something that is not AMQP: is this an AMQP 1.0 port?)")
    amqp091 = "Expected SASL protocol header got: Unknown protocol ['AMQP\\x00\\x00\\x09\\x01']"
    err = transport_failed(EP, Auth("PLAIN"), "amqp:connection:framing-error", amqp091, None, None, None, no_tls)
    assert str(err).endswith("(the broker speaks AMQP 0-9-1 only here: on RabbitMQ 3.x enable the rabbitmq_amqp1_0 "
                             "plugin)")
