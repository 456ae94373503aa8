"""TLS/SASL failure texts, GSSAPI preconditions and secret hiding: the parts that need no service."""

from __future__ import annotations

import logging
import os

import proton
import pytest
from proton import SASL

from koji_messagebus import kerberos
from koji_messagebus.amqp import BrokerError
from koji_messagebus.amqp.connection import kerberos_ticket
from koji_messagebus.config.security import auth_failure, explain_handshake, parse_offered, warn_unverified
from koji_messagebus.config.settings import ConfigError
from tests.support.conffile import keytab, parsed


def test_parse_offered_mechanisms_from_the_frame_trace():
    frame = "FRAME: 0 <- @sasl-mechanisms(64) [sasl-server-mechanisms=@<symbol>[:ANONYMOUS, :PLAIN, :AMQPLAIN]]"
    assert parse_offered(frame) == ("ANONYMOUS", "PLAIN", "AMQPLAIN")
    assert parse_offered("FRAME: 0 <- @sasl-mechanisms(64) [sasl-server-mechanisms=:GSSAPI]") == ("GSSAPI",)
    assert parse_offered("FRAME: 0 <- @sasl-mechanisms(64) [sasl-server-mechanisms=@<symbol>[]]") == ()


@pytest.mark.parametrize("auth, outcome, expected", [
    ("PLAIN", SASL.AUTH, "the broker refused the user name and password (wrong password or unknown user)"),
    ("EXTERNAL", SASL.AUTH, "the broker refused the login with the client certificate cert = /etc/pki/hub.pem"),
    ("ANONYMOUS", SASL.AUTH, "the broker refused anonymous login"),
    ("GSSAPI", SASL.AUTH, "the broker refused Kerberos principal 'messagebus/hub@EXAMPLE.COM'"),
    ("PLAIN", SASL.SYS, "system error at the broker"),
    ("PLAIN", SASL.TEMP, "temporary failure"),
])
def test_auth_failure_says_what_was_refused(auth, outcome, expected):
    text = auth_failure(auth, outcome, auth, ("ANONYMOUS", "PLAIN", "EXTERNAL", "GSSAPI"), "",
                        cert="/etc/pki/hub.pem", principal="messagebus/hub@EXAMPLE.COM")
    assert text.startswith(expected)


def test_auth_failure_mechanism_not_offered_or_not_started():
    text = auth_failure("GSSAPI", SASL.PERM, None, ("ANONYMOUS", "PLAIN"), "")
    assert text == ("the broker does not offer SASL mechanism GSSAPI (it offers ANONYMOUS, PLAIN); set [broker] "
                    "auth to a mechanism the broker offers")
    text = auth_failure("GSSAPI", SASL.PERM, None, ("GSSAPI",), "SASL(-1): generic failure: no ticket")
    assert text == "SASL mechanism GSSAPI could not be started here: SASL(-1): generic failure: no ticket"


def test_auth_failure_keeps_the_brokers_detail():
    text = auth_failure("PLAIN", SASL.AUTH, "PLAIN", None, "user 'koji' can only connect via localhost", "koji")
    assert text.endswith("(user 'koji' can only connect via localhost)")


@pytest.mark.parametrize("desc, cert, expected", [
    ("SSL Failure: error:0A000418:SSL routines::tlsv1 alert unknown ca", "/etc/pki/hub.pem",
     "the broker refused our client certificate cert = /etc/pki/hub.pem (tlsv1 alert unknown ca)"),
    ("SSL Failure: error:0A00045C:SSL routines::tlsv13 alert certificate required", "",
     "the broker requires a client certificate (tlsv13 alert certificate required): set cert and key"),
    ("SSL Failure: error:0A00010B:SSL routines::wrong version number", "",
     "the broker did not answer with TLS (wrong version number): is 5672 its TLS port (usually 5671)?"),
    ("SSL Failure: something new", "", "SSL Failure: something new"),
])
def test_explain_handshake_without_probing(desc, cert, expected):
    assert explain_handshake(desc, "broker.example.com", 5672, "/ca.pem", cert, True, 1.0).startswith(expected)


def test_explain_handshake_verify_failure_without_a_reachable_broker_still_says_what(tmp_path):
    text = explain_handshake("SSL Failure: error:0A000086:SSL routines::certificate verify failed",
                             "127.0.0.1", 9, "/ca.pem", "", True, 0.5)
    assert text == ("the broker's certificate could not be verified (certificate verify failed) against "
                    "cacert = /ca.pem and host name 127.0.0.1")


def test_unverified_tls_is_a_warning(caplog):
    caplog.set_level(logging.WARNING)
    warn_unverified("amqps://broker:5671")
    assert caplog.records[0].levelno == logging.WARNING
    assert "INSECURE: TLS to amqps://broker:5671 WITHOUT verifying" in caplog.records[0].getMessage()


def test_gssapi_without_cyrus_sasl_is_a_config_problem_and_a_connect_error(tmp_path, monkeypatch):
    cfg = parsed(tmp_path, auth="GSSAPI", principal="hub@EXAMPLE.COM", keytab=keytab(tmp_path))
    monkeypatch.setattr(proton.SASL, "extended", staticmethod(lambda: False))
    with pytest.raises(ConfigError) as info:
        parsed(tmp_path, auth="GSSAPI", principal="hub@EXAMPLE.COM", keytab=keytab(tmp_path))
    assert "this python-qpid-proton has no Cyrus SASL (proton.SASL.extended() is False)" in str(info.value)
    with pytest.raises(BrokerError) as err:
        kerberos_ticket(cfg.broker, cfg.endpoints[0])
    assert err.value.kind == "auth" and "proton.SASL.extended() is False" in str(err.value)


def test_kerberos_unreadable_keytab(tmp_path):
    with pytest.raises(kerberos.KerberosError) as info:
        kerberos.obtain_ticket("hub@EXAMPLE.COM", str(tmp_path / "missing.keytab"))
    assert str(info.value) == (f"cannot get a Kerberos ticket for principal 'hub@EXAMPLE.COM' from keytab "
                               f"{tmp_path / 'missing.keytab'}: the keytab is missing or not readable by this process")


def test_kerberos_private_cache_per_principal_and_keytab():
    a = kerberos.ccache_name("a@X", "/k1")
    assert a.startswith(f"MEMORY:koji-messagebus-{os.getpid()}-")
    assert a == kerberos.ccache_name("a@X", "/k1") != kerberos.ccache_name("b@X", "/k1") != \
        kerberos.ccache_name("a@X", "/k2")


