"""TLS and every SASL mechanism against a real TLS listener of the local RabbitMQ (set up by
.ci/rabbitmq-tls.sh: own CA, server, client and untrusted certificates), and GSSAPI against a
throw-away MIT KDC plus a Cyrus SASL AMQP peer; no secret in any log line or error."""

from __future__ import annotations

import configparser
import logging
import os
import subprocess
import sys
import time
import uuid

import pytest

from devkit.config import write_config
from devkit.recorded import first
from koji_messagebus import cli
from koji_messagebus.amqp import AmqpConnection, BrokerError
from koji_messagebus.cli.command_sender import CommandSender
from koji_messagebus.config.settings import ConfigError, load_config, parse_config
from koji_messagebus.format.messages import CALLBACK_TYPES, format_event
from koji_messagebus.format.wire import encode
from tests.support import tls
from tests.support.hub import Hub, fire, load_plugin, unload_plugin
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "Wr0ng-pass-" + uuid.uuid4().hex[:8]
URL_PASSWORD = "url-pass-" + uuid.uuid4().hex[:8]
SPACED_PASSWORD = ("spaced-" + uuid.uuid4().hex[:6], "pass-" + uuid.uuid4().hex[:6])  # "a b": both halves secret
DSN_PASSWORD = "dsn-pass-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module", autouse=True)
def tls_listener():
    """The TLS listeners must be up: a failure here is a failure, not a skip."""
    why = tls.ensure()
    if why:
        pytest.fail(f"RabbitMQ TLS listener not available: {why}")


def tls_broker(**over) -> dict:
    """[broker] for the TLS listener: verified against the test CA, PLAIN as kmb-user."""
    broker = {"host": "localhost", "port": tls.PORT, "ssl": "true", "cacert": tls.CA, "auth": "PLAIN",
              "username": tls.PLAIN_USER, "password": None, "password_file": tls.PASSWORD_FILE,
              "connect_timeout": "10", "timeout": "5"}
    broker.update(over)
    return broker


def write_conf(path, exchange: str, broker: dict) -> str:
    """A messagebus.conf (mode 600) with exactly these [broker] keys (None: left out)."""
    text = "[broker]\n" + "".join(f"{k} = {v}\n" for k, v in broker.items() if v is not None)
    text += f"[exchange]\nname = {exchange}\ntype = topic\n"
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def conf(tmp_path, exchange: str, **broker) -> str:
    return write_conf(tmp_path / f"mb-{uuid.uuid4().hex[:6]}.conf", exchange, tls_broker(**broker))


def tag_message(cfg=None):
    kwargs = first("postTag")
    event = format_event(CALLBACK_TYPES["postTag"], kwargs, "koji.event")
    return encode(event, to=cfg.exchange.message_to(event.routing_key) if cfg else None)


def publish(path: str):
    """Send one message through a sender thread of its own, as the commands do; return the SendResult."""
    cfg = load_config(path)
    with CommandSender(cfg) as sender:
        return sender.send([tag_message(cfg)])


def refusal(path: str) -> BrokerError:
    result = publish(path)
    assert result.error is not None and not result.accepted, "the broker should have refused"
    return result.error


@pytest.fixture
def consumer(exchange_name):
    c = Consumer(exchange_name)
    yield c
    c.close()


@pytest.fixture
def hub(monkeypatch):
    """The plugin loaded as the hub loads it, from a config path."""
    hubs = []

    def start(path: str) -> Hub:
        monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", path)
        load_plugin()
        hubs.append(Hub())
        return hubs[-1]

    yield start
    unload_plugin()
    for h in hubs:
        h.close()


def lines(caplog, level=logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


# ---- delivered --------------------------------------------------------------------------------
def test_plugin_over_tls_with_verified_ca_and_host_name_delivers(tmp_path, exchange_name, consumer, hub,
                                                                 plugin_log):
    h = hub(conf(tmp_path, exchange_name))
    h.request(fire("postTag", first("postTag")))
    got = consumer.collect(expect=1)
    assert [m.headers["type"] for m in got] == ["Tag"]
    said = [r.getMessage() for r in plugin_log.records if "sending to" in r.getMessage()]
    assert said and said[0].startswith(f"messagebus: amqps://localhost:{tls.PORT}: sending to"), said
    assert not lines(plugin_log), "a verified TLS connection with a private password file warns about nothing"


def test_external_with_client_certificate_delivers_as_the_certificates_user(tmp_path, exchange_name, consumer,
                                                                            hub, plugin_log):
    path = conf(tmp_path, exchange_name, auth="EXTERNAL", cert=tls.CLIENT_CERT, key=tls.CLIENT_KEY,
                username=None, password_file=None)
    h = hub(path)
    h.request(fire("postTag", first("postTag")))
    assert [m.headers["type"] for m in consumer.collect(expect=1)] == ["Tag"]
    assert not lines(plugin_log)
    # the broker logged us in as kmb-client (CN of the certificate): that user may not write to kmb-denied-*
    denied = f"kmb-denied-{uuid.uuid4().hex[:8]}"
    other = Consumer(denied)
    try:
        error = refusal(write_conf(tmp_path / "denied.conf", denied, tls_broker(
            auth="EXTERNAL", cert=tls.CLIENT_CERT, key=tls.CLIENT_KEY, username=None, password_file=None)))
        assert other.collect(expect=0, timeout=0.5) == []
    finally:
        other.close()
    assert error.kind == "refused" and "refused access to exchange" in str(error), error


def test_external_with_one_combined_pem(tmp_path, exchange_name, consumer):
    result = publish(conf(tmp_path, exchange_name, auth="EXTERNAL", cert=tls.CLIENT_COMBINED, key="",
                               username=None, password_file=None))
    assert result.error is None and len(result.accepted) == 1
    assert len(consumer.collect(expect=1)) == 1


def test_anonymous_over_tls_delivers(tmp_path, exchange_name, consumer):
    result = publish(conf(tmp_path, exchange_name, auth="ANONYMOUS", username=None, password_file=None))
    assert result.error is None and len(result.accepted) == 1
    assert len(consumer.collect(expect=1)) == 1


def test_amqps_url_verifies_like_ssl_true(tmp_path, exchange_name, consumer):
    good = conf(tmp_path, exchange_name, host=None, port=None, ssl=None, urls=f"amqps://localhost:{tls.PORT}")
    result = publish(good)
    assert result.error is None and len(consumer.collect(expect=1)) == 1
    bad = conf(tmp_path, exchange_name, host=None, port=None, ssl=None, cacert=tls.UNTRUSTED_CA,
               urls=f"amqps://localhost:{tls.PORT}")
    assert refusal(bad).kind == "tls"


def test_ssl_verify_false_connects_but_warns_at_every_connect(tmp_path, exchange_name, consumer, plugin_log):
    path = conf(tmp_path, exchange_name, cacert=tls.UNTRUSTED_CA, ssl_verify="false")
    cfg = load_config(path)
    assert any("ssl_verify = false" in w for w in cfg.warnings)
    for _ in range(2):  # a second connection: warned again
        with CommandSender(cfg) as sender:
            assert sender.send([tag_message(cfg)]).error is None
    assert len(consumer.collect(expect=2)) == 2
    insecure = [r for r in plugin_log.records if "INSECURE" in r.getMessage()]
    assert len(insecure) == 2 and all(r.levelno == logging.WARNING for r in insecure)
    assert "WITHOUT verifying the broker's certificate" in insecure[0].getMessage()


# ---- refused, each with one clear line ---------------------------------------------------------
REFUSALS = {
    # name: (broker overrides, kind, phrase the error must hold)
    "default cacert (system bundle) does not trust a private CA": (
        {"cacert": ""}, "tls", "the broker's certificate is not trusted"),
    "untrusted CA": ({"cacert": tls.UNTRUSTED_CA}, "tls", "the broker's certificate is not trusted"),
    "wrong host name": ({"port": tls.WRONG_NAME_PORT}, "tls",
                        "wrong host name: the broker's certificate (trusted CA) is for wrong-name.invalid, "
                        "not for localhost"),
    "IP address instead of the certificate's name": ({"host": "127.0.0.1"}, "tls",
                                                     "set host (or the URL) to localhost"),
    "client certificate of an untrusted CA": (
        {"auth": "EXTERNAL", "cert": tls.UNTRUSTED_CLIENT_CERT, "key": tls.UNTRUSTED_CLIENT_KEY,
         "username": None, "password_file": None}, "tls", "the broker refused our client certificate"),
    "client certificate of no broker user": (
        {"auth": "EXTERNAL", "cert": tls.NOBODY_CLIENT_CERT, "key": tls.NOBODY_CLIENT_KEY,
         "username": None, "password_file": None}, "auth", "the broker refused the login with the client certificate"),
    "wrong password": ({"password_file": "", "password": WRONG_PASSWORD}, "auth",
                       f"authentication with PLAIN as user '{tls.PLAIN_USER}' failed at broker localhost:5671: "
                       "the broker refused the user name and password (wrong password or unknown user)"),
    "TLS to the plain AMQP port": ({"port": "5672"}, "tls", "the broker did not answer with TLS"),
    "plain AMQP to the TLS port": ({"ssl": "false"}, "connection-lost", "the broker answered with TLS"),
    "certificate and key that do not match": (
        {"auth": "EXTERNAL", "cert": tls.CLIENT_CERT, "key": tls.NOBODY_CLIENT_KEY, "username": None,
         "password_file": None}, "tls", "do not belong together"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_is_one_clear_line(case, tmp_path, exchange_name, consumer, hub, plugin_log):
    over, kind, phrase = REFUSALS[case]
    path = conf(tmp_path, exchange_name, **over)
    start = time.monotonic()
    error = refusal(path)
    assert time.monotonic() - start < 9
    assert error.kind == kind, str(error)
    assert phrase in str(error) and "\n" not in str(error), str(error)
    # through the plugin: exactly one ERROR line, and it says what failed
    plugin_log.clear()
    hub(path).request(fire("postTag", first("postTag")))

    def error_lines() -> list[str]:
        return [r.getMessage() for r in plugin_log.records if r.levelno >= logging.ERROR]

    # the sender thread logs the failure; the request may return before it has (it keeps the message)
    end = time.monotonic() + 10
    while not error_lines() and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.3)  # and no second line after it
    errors = error_lines()
    assert len(errors) == 1, errors
    assert phrase in errors[0] and "\n" not in errors[0], errors[0]
    assert consumer.collect(expect=0, timeout=0.5) == []


def test_mechanism_not_offered_names_what_the_peer_offers(tmp_path, exchange_name):
    """A Cyrus SASL peer that offers only ANONYMOUS; the plugin configured for PLAIN never falls back."""
    port, proc = start_sasl_peer("ANONYMOUS", {})
    try:
        path = write_conf(tmp_path / "p.conf", exchange_name, {
            "host": "localhost", "port": port, "auth": "PLAIN", "username": "u", "password": WRONG_PASSWORD,
            "connect_timeout": "10"})
        error = refusal(path)
    finally:
        stop(proc)
    assert error.kind == "auth"
    assert "does not offer SASL mechanism PLAIN (it offers ANONYMOUS)" in str(error), str(error)


def test_plain_without_tls_and_a_readable_password_warn_once_at_load(tmp_path, exchange_name, consumer, hub,
                                                                      plugin_log):
    path = write_config(tmp_path / "plain.conf", exchange_name)  # guest/guest on 5672, no TLS
    os.chmod(path, 0o644)
    h = hub(path)
    for _ in range(3):
        h.request(fire("postTag", first("postTag")))
    assert len(consumer.collect(expect=3)) == 3
    warnings = lines(plugin_log)
    clear = [w for w in warnings if "auth = PLAIN without TLS sends the password in clear text" in w]
    readable = [w for w in warnings if f"{path} (config file) holds a password and is readable" in w]
    assert len(clear) == 1 and len(readable) == 1, warnings
    assert f"chmod 600 {path}" in readable[0]


# ---- no secret anywhere ------------------------------------------------------------------------
def test_no_secret_in_any_log_line_or_error(tmp_path, exchange_name, consumer, hub, caplog, capsys):
    """Every path above once more, capturing every logger at DEBUG, every error and exception text."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    password = tls.password()
    cases = [
        {},  # good PLAIN over TLS (password_file)
        {"password_file": "", "password": password},  # good, password in the conf
        {"password_file": "", "password": WRONG_PASSWORD},
        {"password_file": "", "password": password, "cacert": tls.UNTRUSTED_CA},
        {"password_file": "", "password": password, "port": tls.WRONG_NAME_PORT},
        {"password_file": "", "password": password, "ssl_verify": "false", "cacert": tls.UNTRUSTED_CA},
        {"auth": "EXTERNAL", "cert": tls.CLIENT_CERT, "key": tls.CLIENT_KEY, "username": None, "password_file": None},
        {"auth": "EXTERNAL", "cert": tls.CLIENT_COMBINED, "key": "", "username": None, "password_file": None},
        {"auth": "EXTERNAL", "cert": tls.UNTRUSTED_CLIENT_CERT, "key": tls.UNTRUSTED_CLIENT_KEY, "username": None,
         "password_file": None},
        {"auth": "EXTERNAL", "cert": tls.NOBODY_CLIENT_CERT, "key": tls.NOBODY_CLIENT_KEY, "username": None,
         "password_file": None},
        {"auth": "EXTERNAL", "cert": tls.CLIENT_CERT, "key": tls.UNTRUSTED_CLIENT_KEY, "username": None,
         "password_file": None},
    ]
    for over in cases:
        path = conf(tmp_path, exchange_name, **over)
        os.chmod(path, 0o644)  # readable: the warning names the file, never the password
        result = publish(path)
        texts.append(str(result.error))
        hub(path).request(fire("postTag", first("postTag")))
        unload_plugin()
    # config errors: credentials in a URL (valid and unparsable), a password next to a password_file
    bad_confs = [
        {"urls": f"amqps://koji:{URL_PASSWORD}@localhost:{tls.PORT}", "host": None, "port": None, "ssl": None},
        {"urls": f"amqps://koji:{URL_PASSWORD}@localhost:99999", "host": None, "port": None, "ssl": None},
        {"urls": f"amqps://koji:{URL_PASSWORD}/x@y@localhost", "host": None, "port": None, "ssl": None},
        {"password": WRONG_PASSWORD},  # and password_file: both set
        {"urls": f"amqps://koji:{' '.join(SPACED_PASSWORD)}@localhost:{tls.PORT}", "host": None, "port": None,
         "ssl": None},  # a password with a space: the URL list splits inside it
    ]
    for over in bad_confs:
        path = conf(tmp_path, exchange_name, **over)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        texts.append(str(info.value))
        hub(path).request(fire("postTag", first("postTag")))  # logged: plugin disabled by config error
        unload_plugin()
        cli.main(["check", "--config", path])
    # `check` with the outbox on and a malformed DBConnectionString in hub.conf
    hub_conf = tmp_path / "hub.conf"
    hub_conf.write_text(f"[hub]\nDBConnectionString = dbname=koji password {DSN_PASSWORD} host=127.0.0.1\n")
    path = conf(tmp_path, exchange_name)
    with open(path, "a") as fh:
        fh.write(f"[outbox]\nenabled = true\nhub_config = {hub_conf}\n")
    cli.main(["check", "--config", path])
    printed = capsys.readouterr()
    texts += [printed.out, printed.err]
    assert "DBConnectionString is not a valid" in printed.err + printed.out
    captured = [r.getMessage() for r in caplog.records]
    captured += [logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info]
    assert len(captured) > 20 and any("refused" in t for t in texts)
    secrets = tls.secrets() + [WRONG_PASSWORD, URL_PASSWORD, *SPACED_PASSWORD, DSN_PASSWORD]
    for text in captured + texts:
        for secret in secrets:
            assert secret not in text, f"secret leaked into: {text[:300]}"


# ---- GSSAPI ------------------------------------------------------------------------------------
def start_sasl_peer(mech: str, env: dict) -> tuple[int, subprocess.Popen]:
    """tests/support/sasl_server.py on a free port, demanding `mech`."""
    from tests.support.kdc import _free_port

    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.sasl_server", str(port), mech],
                            env={**os.environ, **env}, cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if line.strip() != "LISTENING":
        raise AssertionError(f"tests/support/sasl_server.py did not start: {line}{stop(proc)[-2000:]}")
    return port, proc


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    return out or ""


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    """A local MIT KDC (realm KMB.TEST) on loopback, its env set for this process."""
    from tests.support import kdc

    missing = kdc.tools_missing()
    if missing:
        pytest.skip(f"no local KDC: {missing}")
    r = kdc.Realm(str(tmp_path_factory.mktemp("realm")))
    try:
        r.start()
    except RuntimeError as exc:
        r.stop()
        pytest.skip(f"the local MIT KDC could not be started here: {exc}")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in r.env.items():
            mp.setenv(key, value)
        yield r
    r.stop()


def gss_config(tmp_path, realm, exchange: str, **broker) -> str:
    from tests.support import kdc

    values = {"host": "localhost", "port": "5672", "auth": "GSSAPI", "principal": kdc.CLIENT,
              "keytab": realm.client_keytab, "connect_timeout": "10"}
    values.update(broker)
    return write_conf(tmp_path / f"gss-{uuid.uuid4().hex[:6]}.conf", exchange, values)


def test_gssapi_ticket_comes_from_the_keytab_into_a_private_cache(realm):
    import gssapi

    from koji_messagebus import kerberos
    from tests.support import kdc

    ticket = kerberos.obtain_ticket(kdc.CLIENT, realm.client_keytab)
    assert ticket.principal == kdc.CLIENT and ticket.lifetime and ticket.lifetime > 60
    assert ticket.ccache.startswith("MEMORY:koji-messagebus-")
    held = gssapi.Credentials(usage="initiate", store={"ccache": ticket.ccache})
    assert str(held.name) == kdc.CLIENT
    assert f"{kdc.CLIENT} for krbtgt/{kdc.REALM}@{kdc.REALM}" in realm.log()  # the KDC issued it (AS_REQ)
    assert not os.path.exists(os.path.join(realm.dir, "ccache-default")), "the default cache stays untouched"


def test_gssapi_ticket_is_renewed_from_the_keytab_when_it_nears_expiry(tmp_path, realm):
    from koji_messagebus import kerberos

    principal = f"kmb-short@{realm_name()}"
    keytab = realm.add_principal(principal, str(tmp_path / "short.keytab"), maxlife="6 seconds")
    first_ticket = kerberos.obtain_ticket(principal, keytab)
    issued = realm.log().count("ISSUE: authtime")
    assert first_ticket.lifetime <= 6
    time.sleep(3.5)  # past half the ticket's life: MIT gets a new one from the client keytab
    second = kerberos.obtain_ticket(principal, keytab)
    assert second.lifetime > 4 and realm.log().count("ISSUE: authtime") > issued


def realm_name() -> str:
    from tests.support import kdc

    return kdc.REALM


def test_gssapi_end_to_end_with_a_cyrus_sasl_peer(tmp_path, realm, exchange_name):
    """No broker here speaks GSSAPI: a proton/Cyrus SASL AMQP 1.0 peer that demands GSSAPI, with the
    service keytab, authenticates the plugin's principal and receives the message."""
    from tests.support import kdc

    sasl_dir = tmp_path / "sasl"
    sasl_dir.mkdir()
    (sasl_dir / "proton-server.conf").write_text("mech_list: GSSAPI\n")
    port, proc = start_sasl_peer("GSSAPI", {**realm.env, "KRB5_KTNAME": realm.service_keytab,
                                            "PN_SASL_CONFIG_PATH": str(sasl_dir)})
    try:
        cfg = load_config(gss_config(tmp_path, realm, exchange_name, port=port))
        with CommandSender(cfg) as sender:
            result = sender.send([tag_message(cfg)])
    finally:
        out = stop(proc)
    assert result.error is None and len(result.accepted) == 1, result.error
    assert "AUTH GSSAPI kmb-hub" in out, out
    # address = auto: the peer announces no product, so the exchange's name is the target
    assert f"MSG {tag_message().routing_key} {exchange_name}" in out, out
    assert f"{kdc.CLIENT} for {kdc.SERVICE}" in realm.log()  # service ticket from the KDC (TGS_REQ)


def test_gssapi_refused_by_rabbitmq_says_the_mechanism_is_not_offered(tmp_path, realm, exchange_name):
    for port, tls_over in ((5672, {}), (tls.PORT, {"ssl": "true", "cacert": tls.CA})):
        error = refusal(gss_config(tmp_path, realm, exchange_name, port=port, **tls_over))
        assert error.kind == "auth"
        offered = str(error).split("(it offers ", 1)[-1].split(")", 1)[0]
        assert "the broker does not offer SASL mechanism GSSAPI" in str(error), str(error)
        # what matters: GSSAPI named as not offered, and what the broker does offer (whatever this
        # machine's listener has: EXTERNAL too on a TLS listener with client certificates)
        assert offered and "GSSAPI" not in offered.split(", "), str(error)


def test_gssapi_keytab_without_the_principal_is_a_clear_error(tmp_path, realm, exchange_name):
    error = refusal(gss_config(tmp_path, realm, exchange_name, keytab=realm.service_keytab))
    assert error.kind == "auth"
    assert f"cannot get a Kerberos ticket for principal 'kmb-hub@KMB.TEST' from keytab {realm.service_keytab}" \
        in str(error)
    assert f"klist -k {realm.service_keytab}" in str(error)


def test_gssapi_unknown_service_principal_is_a_clear_error(tmp_path, realm, exchange_name):
    """host 127.0.0.1: Cyrus asks the KDC for amqp/127.0.0.1, which does not exist."""
    port, proc = start_sasl_peer("GSSAPI", {**realm.env, "KRB5_KTNAME": realm.service_keytab})
    try:
        error = refusal(gss_config(tmp_path, realm, exchange_name, host="127.0.0.1", port=port))
    finally:
        stop(proc)
    assert error.kind == "auth"
    assert "SASL mechanism GSSAPI could not be started here" in str(error)
    assert "amqp/127.0.0.1@KMB.TEST not found in Kerberos database" in str(error)


def test_connection_reports_mechanism_used(tmp_path, exchange_name, consumer):
    """Only the configured mechanism is used, although RabbitMQ offers ANONYMOUS first."""
    for over, mech in (({}, "PLAIN"), ({"auth": "EXTERNAL", "cert": tls.CLIENT_COMBINED, "key": "",
                                        "username": None, "password_file": None}, "EXTERNAL")):
        parser = configparser.RawConfigParser()
        parser.read(conf(tmp_path, exchange_name, **over))
        cfg = parse_config(parser, "t.conf")
        conn = AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
        try:
            conn.open(time.monotonic() + 10)
            assert conn.connection.mechanism == mech
            assert conn.connection.offered_mechanisms and conn.connection.offered_mechanisms[0] == "ANONYMOUS"
        finally:
            conn.close()
