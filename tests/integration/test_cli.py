"""`koji-messagebus` against the real RabbitMQ (AMQP 1.0) and PostgreSQL: every subcommand, the
failure paths (closed port, wrong password, missing exchange, broken config) with their exit codes
and output, and the cookbook's recipes and snippets.  Exit codes are checked on the installed
console script in a subprocess; in-process runs where only speed matters."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pika
import psycopg2
import pytest
from koji.util import encode_datetime_recurse
from psycopg2.extensions import parse_dsn

from devkit.config import write_config
from koji_messagebus import cli
from koji_messagebus.cli import examples
from koji_messagebus.cli.command_sender import CommandSender
from koji_messagebus.config.settings import load_config
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.format.messages import CALLBACK_TYPES, format_event
from koji_messagebus.format.wire import encode
from koji_messagebus.rabbitmq import QUEUE_EXPIRES_MS
from koji_messagebus.transaction import outbox
from tests.support import outbox_db
from tests.support.hub import DSN
from tests.support.pika_consumer import AMQP_HOST, AMQP_PORT, Consumer

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KOJI_MB = os.path.join(os.path.dirname(sys.executable), "koji-messagebus")
STORY = [(cb, kw) for _, _, events in examples.build_story() for cb, kw in events]
STORY_KEYS = [format_event(CALLBACK_TYPES[cb], encode_datetime_recurse(kw), "koji.event").routing_key
              for cb, kw in STORY]


# ---- helpers -----------------------------------------------------------------------------------
def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "KOJI_MESSAGEBUS_CONFIG"}
    e.update(extra)
    return e


def run(*args, timeout: float = 60, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([KOJI_MB, *args], capture_output=True, text=True, env=env(**extra_env), timeout=timeout)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def channel():
    conn = pika.BlockingConnection(pika.ConnectionParameters(AMQP_HOST, AMQP_PORT))
    return conn, conn.channel()


def queue_exists(name: str) -> bool:
    conn, ch = channel()
    try:
        ch.queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if conn.is_open:
            conn.close()


def gone(queue: str, within: float = QUEUE_EXPIRES_MS / 1000 + 15) -> bool:
    """The queue is deleted: the broker deletes an auto-delete queue shortly after its consumer left,
    and at the latest once unused for its x-expires (rabbitmq.QUEUE_EXPIRES_MS), the listener's
    guarantee.  RabbitMQ 3.10's AMQP 1.0 plugin was seen, about once in ten CI runs over TLS, not to
    let the auto-delete happen within 20 s; so the bound is x-expires plus a margin."""
    deadline = time.monotonic() + within
    while queue_exists(queue):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture(scope="module")
def exchanges():
    """Exchanges made by this module; at the end the queues RabbitMQ 3.x left bound to them (the
    /exchange/NAME/KEY source path) are deleted, then the exchanges."""
    made: list[str] = []

    def make(ex_type: str = "topic", declare: bool = True) -> str:
        name = f"kmb.cli.{uuid.uuid4().hex[:10]}"
        if declare:
            conn, ch = channel()
            ch.exchange_declare(name, ex_type, durable=False)
            conn.close()
        made.append(name)
        return name

    yield make
    leftovers = set()
    if shutil.which("rabbitmqctl"):
        res = subprocess.run(["rabbitmqctl", "-q", "list_bindings", "source_name", "destination_name"],
                             capture_output=True, text=True, timeout=60)
        for line in res.stdout.splitlines():
            source, _, dest = line.partition("\t")
            if source in made and dest.startswith(("amq.gen-", "koji-messagebus-listen-")):
                leftovers.add(dest)
    conn, ch = channel()
    for queue in leftovers:
        ch.queue_delete(queue)
    for name in made:
        ch.exchange_delete(name)
    conn.close()


@pytest.fixture
def conf(tmp_path):
    """conf(exchange, **sections) -> a messagebus.conf for the local RabbitMQ."""
    def make(name: str, **sections) -> str:
        sections.setdefault("exchange", {}).setdefault("durable", "false")
        return write_config(tmp_path / f"mb-{uuid.uuid4().hex[:6]}.conf", name, **sections)
    return make


def publish(config_path: str, kwargs_list: list[tuple[str, dict]]) -> list[str]:
    """Send events the way the plugin does; return their message ids."""
    config = load_config(config_path)
    messages = [encode(format_event(CALLBACK_TYPES[cb], encode_datetime_recurse(kw),
                                    config.topic.prefix)) for cb, kw in kwargs_list]
    with CommandSender(config) as sender:
        result = sender.send(messages)
    assert result.error is None and len(result.accepted) == len(messages)
    return [m.msg_id for m in messages]


class Listen:
    """`koji-messagebus listen` in a subprocess, started once its receivers are attached."""

    def __init__(self, *args: str, ready_timeout: float = 20.0):
        self.proc = subprocess.Popen([KOJI_MB, "listen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env())
        self.err: list[str] = []
        self.out: list[str] = []
        ready = threading.Event()

        def read_err():
            for line in self.proc.stderr:
                self.err.append(line)
                if line.startswith("listening on"):
                    ready.set()
            ready.set()

        self.threads = [threading.Thread(target=read_err, daemon=True),
                        threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True)]
        for t in self.threads:
            t.start()
        assert ready.wait(ready_timeout), f"listener did not start: {self.err}"
        assert any(line.startswith("listening on") for line in self.err), "".join(self.err)

    @property
    def queue(self) -> str | None:
        match = re.search(r"via queue (\S+)", "".join(self.err))
        return match.group(1) if match else None

    def finish(self, timeout: float = 30.0) -> tuple[int, list[str], str]:
        rc = self.proc.wait(timeout=timeout)
        for t in self.threads:
            t.join(5)
        return rc, [line.rstrip("\n") for line in self.out], "".join(self.err)


# ---- check -------------------------------------------------------------------------------------
def test_check_works_and_sends_nothing(exchanges, conf):
    exchange = exchanges()
    consumer = Consumer(exchange, declare=False)
    try:
        res = run("--config", conf(exchange), "check")
        assert res.returncode == 0, res.stdout + res.stderr
        lines = res.stdout.splitlines()
        assert lines[0].startswith("ok: config ")
        assert any(line.startswith("warning: ") and "PLAIN without TLS" in line for line in res.stderr.splitlines())
        assert lines[-1].startswith("ok: broker amqp://127.0.0.1:5672 (PLAIN as 'guest') accepted the login")
        assert f"exchange '{exchange}' (address /exchange/{exchange})" in lines[-1]
        assert consumer.collect(timeout=0.5) == []
    finally:
        consumer.close(delete_exchange=False)


def test_check_unreachable_broker(exchanges, conf):
    port = closed_port()
    start = time.monotonic()
    res = run("--config", conf(exchanges(), broker={"port": port}), "check")
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == f"error: broker 127.0.0.1:{port} unreachable: Connection refused"
    assert time.monotonic() - start < 5


def test_check_wrong_password(exchanges, conf):
    res = run("--config", conf(exchanges(), broker={"password": "not-the-password"}), "check")
    assert res.returncode == 1
    last = res.stderr.splitlines()[-1]
    assert last.startswith("error: authentication with PLAIN as user 'guest' failed at broker 127.0.0.1:5672")
    assert "not-the-password" not in res.stdout + res.stderr


def test_check_missing_exchange(exchanges, conf):
    exchange = exchanges(declare=False)
    res = run("--config", conf(exchange), "check")
    assert res.returncode == 1
    last = res.stderr.splitlines()[-1]
    assert last.startswith(f"error: exchange '{exchange}' (address /exchange/{exchange}) does not exist")
    assert "rabbitmqctl eval 'rabbit_exchange:declare(" in last


def test_check_broken_config_lists_every_problem(tmp_path):
    path = write_config(tmp_path / "bad.conf", "x", broker={"port": "http", "username": "", "ssl_verify": "maybe"},
                        outbox={"enabled": "sometimes"})
    res = run("--config", path, "check")
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4, res.stderr
    for key in ("[broker] port", "[broker] ssl_verify", "[outbox] enabled", "[broker] username is empty"):
        assert any(key in line for line in errors), key


def test_check_reports_a_readable_password_file(exchanges, conf, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("guest\n")
    os.chmod(secret, 0o644)
    res = run("--config", conf(exchanges(), broker={"password": "", "password_file": secret}), "check")
    assert res.returncode == 0
    assert any(f"chmod 600 {secret}" in line and line.startswith("warning:") for line in res.stderr.splitlines())


def test_check_with_the_outbox(exchanges, conf, pg):
    path = conf(exchanges(), outbox={"enabled": "true", "hub_config": pg.hub_conf})
    res = run("--config", path, "check")
    assert res.returncode == 1
    assert f"error: outbox: table {outbox.TABLE} does not exist" in res.stderr
    assert "koji-messagebus outbox init" in res.stderr
    pg.create_table()
    res = run("--config", path, "check")
    assert res.returncode == 0, res.stdout
    assert res.stdout.splitlines()[-1] == (f"ok: outbox table {outbox.TABLE} in database 'test' on 127.0.0.1:5432 "
                                           "as user 'postgres': 0 row(s) waiting")


# ---- listen ------------------------------------------------------------------------------------
def test_listen_with_a_topic_binding(exchanges, conf):
    exchange = exchanges()
    path = conf(exchange)
    listener = Listen("--config", path, "--key", "koji.event.Tag.#", "--count", "1", "--timeout", "20")
    assert listener.queue and queue_exists(listener.queue)
    ids = publish(path, [("postUntag", examples.untag()), ("postRepoInit", examples.repo_init()),
                         ("postTag", examples.tag())])
    rc, lines, err = listener.finish()
    assert rc == 0, err
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["id"] == ids[2] and record["type"] == "Tag" and record["durable"] is True
    assert record["routing_key"] == "koji.event.Tag.f44-updates-candidate.hello.alice"
    assert record["headers"] == {"type": "Tag", "tag": "f44-updates-candidate", "name": "hello",
                                 "version": "2.12.1", "release": "3.fc44", "user": "alice"}
    assert record["body"]["build"]["nvr"] == "hello-2.12.1-3.fc44"
    assert record["body"]["build"]["creation_time"] == "2026-03-02 10:15:09.220331+00:00"  # convert_datetime
    assert gone(listener.queue)  # auto-deleted when the listener left


@pytest.mark.parametrize("source", [None, "/exchange/{name}/{key}"], ids=["temporary-queue", "amqp10-source"])
def test_listen_with_several_keys_prints_each_message_once(exchanges, conf, source):
    exchange = exchanges()
    path = conf(exchange)
    extra = ["--source", source] if source else []
    listener = Listen("--config", path, "--key", "koji.event.Tag.#", "--key", "koji.event.#", "--key", "#",
                      "--timeout", "4", *extra)
    ids = publish(path, STORY)
    rc, lines, err = listener.finish()
    assert rc == 0, err
    assert [json.loads(line)["id"] for line in lines] == ids
    if source:  # RabbitMQ 3.x leaves the /exchange/ source's queue behind: the listener says so
        assert "keeps a listener's queue" in err and "set_policy" in err


def test_listen_matches_headers_on_the_client_side(exchanges, conf):
    path = conf(exchanges())
    listener = Listen("--config", path, "--header", "tag=f44-b*", "--header", "type=Repo*", "--timeout", "4",
                      "--pretty")
    publish(path, STORY)
    rc, lines, err = listener.finish()
    assert rc == 0, err
    assert "header match (client-side): tag=f44-b* type=Repo*" in err
    heads = [line for line in lines if line.startswith("── ")]
    assert heads == ["── RepoInit  koji.event.RepoInit.f44-build", "── RepoDone  koji.event.RepoDone.f44-build"]
    assert any('"repo_id": 9021' in line for line in lines)


def test_listen_on_a_headers_exchange(exchanges, conf):
    path = conf(exchanges("headers"), exchange={"type": "headers"})
    listener = Listen("--config", path, "--header", "new=1", "--count", "1", "--timeout", "20")
    publish(path, STORY)
    rc, lines, err = listener.finish()
    assert rc == 0, err
    assert [json.loads(line)["routing_key"] for line in lines] == ["koji.event.BuildStateChange.state.hello"]
    res = run("--config", path, "listen", "--key", "koji.event.#", "--timeout", "1")
    assert res.returncode == 2 and "--key needs a topic exchange" in res.stderr


def test_listen_ends_cleanly_on_ctrl_c(exchanges, conf):
    listener = Listen("--config", conf(exchanges()))
    listener.proc.send_signal(signal.SIGINT)
    rc, lines, err = listener.finish()
    assert rc == 0 and lines == []
    assert "stopped after 0 message(s)" in err and "Traceback" not in err
    assert gone(listener.queue)


def test_listen_sigterm_ends_cleanly_too(exchanges, conf):
    listener = Listen("--config", conf(exchanges()))
    listener.proc.terminate()
    rc, _, err = listener.finish()
    assert rc == 0 and "Traceback" not in err


def test_listen_timeout_before_count_is_a_failure(exchanges, conf):
    res = run("--config", conf(exchanges()), "listen", "--count", "5", "--timeout", "0.5")
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == "timeout: 0 of 5 message(s) within 0.5s"


@pytest.mark.parametrize("case", ["unreachable", "password", "exchange"])
def test_listen_failures_are_one_line(exchanges, conf, case):
    if case == "unreachable":
        port = closed_port()
        path, expected = conf(exchanges(), broker={"port": port}), f"error: broker 127.0.0.1:{port} unreachable"
    elif case == "password":
        path, expected = conf(exchanges(), broker={"password": "wrong"}), "error: authentication with PLAIN"
    else:
        name = exchanges(declare=False)
        path, expected = conf(name), f"error: exchange '{name}' (address /exchange/{name}) does not exist"
    res = run("--config", path, "listen", "--timeout", "5")
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1].startswith(expected), res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_listen_broken_config(tmp_path):
    path = write_config(tmp_path / "bad.conf", "x", broker={"heartbeat": "-5"}, exchange={"name": ""})
    res = run("--config", path, "listen")
    assert res.returncode == 2
    assert len(res.stderr.splitlines()) == 2 and all(line.startswith("error: ") for line in res.stderr.splitlines())


# ---- over TLS (the listener uses the plugin's TLS and SASL set-up) -------------------------------
@pytest.fixture
def tls_conf(tmp_path):
    """conf(exchange, **broker) for the TLS listener of the local RabbitMQ (.ci/rabbitmq-tls.sh)."""
    from tests.support import tls

    why = tls.ensure()
    if why:
        pytest.fail(f"RabbitMQ TLS listener not available: {why}")

    def make(name: str, **broker) -> str:
        keys = {"host": "localhost", "port": tls.PORT, "ssl": "true", "cacert": tls.CA, "auth": "PLAIN",
                "username": tls.PLAIN_USER, "password_file": tls.PASSWORD_FILE, "connect_timeout": "10"}
        keys.update(broker)
        path = tmp_path / f"tls-{uuid.uuid4().hex[:6]}.conf"
        path.write_text("[broker]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None)
                        + f"[exchange]\nname = {name}\ndurable = false\n")
        os.chmod(path, 0o600)
        return str(path)
    return make


@pytest.mark.parametrize("auth", ["PLAIN", "EXTERNAL"])
def test_check_and_listen_over_tls(exchanges, conf, tls_conf, auth):
    from tests.support import tls

    exchange = exchanges()
    extra = {} if auth == "PLAIN" else {"auth": "EXTERNAL", "username": None, "password_file": None,
                                        "cert": tls.CLIENT_CERT, "key": tls.CLIENT_KEY}
    path = tls_conf(exchange, **extra)
    res = run("--config", path, "check")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning" not in res.stdout + res.stderr
    assert f"ok: broker amqps://localhost:{tls.PORT} ({auth}" in res.stdout
    listener = Listen("--config", path, "--count", "1", "--timeout", "20")
    assert listener.queue  # a temporary queue prepared over AMQP 0-9-1 with the same TLS settings
    ids = publish(conf(exchange), [("postTag", examples.tag())])
    rc, lines, err = listener.finish()
    assert rc == 0, err
    assert [json.loads(line)["id"] for line in lines] == ids
    assert gone(listener.queue)


def test_check_over_tls_with_an_untrusted_ca_fails_clearly(exchanges, tls_conf):
    from tests.support import tls

    res = run("--config", tls_conf(exchanges(), cacert=tls.UNTRUSTED_CA), "check")
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1].startswith("error: TLS")


# ---- demo --------------------------------------------------------------------------------------
def test_demo_end_to_end(exchanges, conf):
    exchange = exchanges()
    path = conf(exchange)
    consumer = Consumer(exchange, declare=False)
    try:
        res = run("--config", path, "demo", timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        got = consumer.collect(expect=len(STORY))
    finally:
        consumer.close(delete_exchange=False)
    lines = res.stdout.splitlines()
    assert "plugin loaded as the hub loads it" in res.stdout and "messagebus_collect" in res.stdout
    progress = [line for line in lines if re.match(r"\[\d/8\] ", line)]
    assert [p.split(":")[0] for p in progress] == [f"[{i}/8] {m}" for i, (m, _, _) in
                                                   enumerate(examples.build_story(), 1)]
    consumed = [line.split()[3] for line in lines if line.strip().startswith("consumer got")]
    assert consumed == STORY_KEYS
    assert [r.routing_key for r in got] == STORY_KEYS  # what another client (pika) received
    assert all(r.delivery_mode == 2 for r in got)
    assert "done: the consumer received 9 of 9 message(s)" in lines
    queues = re.findall(r"on queue (\S+)", res.stdout)
    assert queues and gone(queues[0])
    assert f"next: `koji-messagebus --config {path} listen --pretty`" in res.stdout


def test_demo_readme_command_with_the_builtin_config():
    res = run("demo", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "config: the built-in demo config" in res.stdout and "exchange 'koji.demo'" in res.stdout
    assert "done: the consumer received 9 of 9 message(s)" in res.stdout
    assert "next: `koji-messagebus listen --pretty`" in res.stdout  # the same built-in config


def test_demo_json_output_has_whole_messages(exchanges, conf):
    res = run("--config", conf(exchanges()), "demo", "--json", timeout=120)
    assert res.returncode == 0
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["routing_key"] for r in records] == STORY_KEYS
    assert records[3]["headers"]["new"] == examples.COMPLETE and records[3]["body"]["info"]["state"] == 1


@pytest.mark.parametrize("case", ["unreachable", "password", "exchange"])
def test_demo_failures(exchanges, conf, case):
    extra: list[str] = []
    if case == "unreachable":
        port = closed_port()
        path, expected = conf(exchanges(), broker={"port": port}), f"127.0.0.1:{port} unreachable"
    elif case == "password":
        path, expected = conf(exchanges(), broker={"password": "wrong"}), "authentication with PLAIN"
    else:
        name = exchanges(declare=False)
        path, expected, extra = conf(name), f"exchange '{name}' (address /exchange/{name}) does not exist", \
            ["--no-declare"]
    res = run("--config", path, "demo", *extra, timeout=120)
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and expected in res.stderr, res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr


def test_demo_in_test_mode_sends_nothing(exchanges, conf, capsys):
    exchange = exchanges()
    consumer = Consumer(exchange, declare=False)
    try:
        assert cli.main(["--config", conf(exchange, broker={"test_mode": "true"}), "demo"]) == 0
        assert consumer.collect(timeout=0.5) == []
    finally:
        consumer.close(delete_exchange=False)
    assert "test_mode = true" in capsys.readouterr().out


def test_demo_through_the_outbox(exchanges, conf, pg, capsys, monkeypatch):
    """With [outbox] enabled the demo gives the plugin the hub's database (from hub.conf): each
    request's messages are stored in preCommit, sent and deleted in postCommit."""
    pg.create_table()
    stored: list[int] = []
    real_store = outbox.store_request

    def store(cnx, messages, *args, **kwargs):
        result = real_store(cnx, messages, *args, **kwargs)
        stored.append(len(result.ids or []))
        return result

    monkeypatch.setattr(outbox, "store_request", store)
    path = conf(exchanges(), outbox={"enabled": "true", "hub_config": pg.hub_conf})
    assert cli.main(["--config", path, "demo"]) == 0
    out = capsys.readouterr().out
    assert "done: the consumer received 9 of 9 message(s)" in out
    assert "plugin error" not in out
    assert stored == [1, 1, 1, 2, 1, 1, 1, 1]  # one store per hub request, in its transaction
    assert pg.rows() == 0


# ---- outbox ------------------------------------------------------------------------------------
class PG:
    def __init__(self, schema: str, hub_conf: str):
        self.schema, self.hub_conf = schema, hub_conf

    def sql(self, statement: str, params=None):
        return outbox_db.sql(statement, params, schema=self.schema)

    def create_table(self):
        self.sql(outbox.SCHEMA)

    def rows(self) -> int:
        return self.sql(f"SELECT count(*) FROM {outbox.TABLE}")[0][0]

    def store(self, events: list[tuple[str, dict]]) -> list[str]:
        messages = [encode(format_event(CALLBACK_TYPES[cb], encode_datetime_recurse(kw), "koji.event"))
                    for cb, kw in events]
        cnx = psycopg2.connect(DSN, options=f"-c search_path={self.schema}")
        try:
            outbox.store(cnx, messages)
            cnx.commit()
        finally:
            cnx.close()
        return [m.msg_id for m in messages]


@pytest.fixture
def pg(tmp_path, monkeypatch):
    """A private schema in the test database and a hub.conf ([hub] DBName, DBUser, DBHost, DBPort)
    pointing at it; libpq's PGOPTIONS puts the schema first in the search path (here and in
    subprocesses)."""
    schema = f"kmb_cli_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    dsn = parse_dsn(DSN)
    hub_conf = tmp_path / "hub.conf"
    hub_conf.write_text(f"[hub]\nDBName = {dsn['dbname']}\nDBUser = {dsn.get('user', 'postgres')}\n"
                        f"DBHost = {dsn.get('host', '127.0.0.1')}\nDBPort = {dsn.get('port', 5432)}\n"
                        "KojiDir = /mnt/koji\n")
    monkeypatch.setenv("PGOPTIONS", f"-c search_path={schema}")
    yield PG(schema, str(hub_conf))
    with admin.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


def test_outbox_init_status_purge(pg, capsys):
    where = "database 'test' on 127.0.0.1:5432 as user 'postgres'"
    assert cli.main(["outbox", "status", "--hub-config", pg.hub_conf]) == 1
    assert capsys.readouterr().err.strip() == (f"error: table {outbox.TABLE} does not exist in {where}: "
                                               "create it with `koji-messagebus outbox init`")
    for _ in range(2):  # idempotent
        assert cli.main(["outbox", "init", "--hub-config", pg.hub_conf]) == 0
    assert f"{outbox.TABLE} is ready in {where}" in capsys.readouterr().out
    assert cli.main(["outbox", "status", "--hub-config", pg.hub_conf]) == 0
    assert capsys.readouterr().out.strip() == f"{outbox.TABLE} in {where}: 0 row(s), empty"
    pg.store(STORY)
    pg.sql(f"UPDATE {outbox.TABLE} SET stored = clock_timestamp() - interval '3 days' WHERE id IN "
           f"(SELECT id FROM {outbox.TABLE} ORDER BY id LIMIT 4)")
    assert cli.main(["outbox", "status", "--hub-config", pg.hub_conf]) == 0
    assert re.fullmatch(rf"{outbox.TABLE} in {where}: 9 row\(s\), the oldest stored 3d00h ago",
                        capsys.readouterr().out.strip())
    assert cli.main(["outbox", "purge", "--older-than", "2d", "--hub-config", pg.hub_conf]) == 0
    assert capsys.readouterr().out.startswith("purged 4 row(s) older than 2d00h")
    assert pg.rows() == 5


def test_readme_outbox_commands_give_the_hub_user_exactly_enough(pg, exchanges, conf, tmp_path):
    """README's way when another role owns the table: `outbox schema --grant-to USER | psql` as the
    owner; then the hub's user (no other privilege) passes `check` and can flush."""
    role = f"kmb_hub_{uuid.uuid4().hex[:8]}"
    pg.sql(f"CREATE ROLE {role} LOGIN")
    try:
        pg.sql(f"GRANT USAGE ON SCHEMA {pg.schema} TO {role}")  # README: outside `public`
        res = run("outbox", "schema", "--grant-to", role)
        assert res.returncode == 0, res.stderr
        pg.sql(res.stdout)  # as the owner (postgres), as `| psql koji` would
        hub_conf = tmp_path / "hub-as-role.conf"
        hub_conf.write_text(open(pg.hub_conf).read().replace("DBUser = postgres", f"DBUser = {role}"))
        exchange = exchanges()
        path = conf(exchange, outbox={"enabled": "true", "hub_config": hub_conf})
        res = run("--config", path, "check")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"ok: outbox table {outbox.TABLE} in database 'test' on 127.0.0.1:5432 as user '{role}'" in res.stdout
        pg.store(STORY)
        res = run("--config", path, "outbox", "flush")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "sent 9 message(s); the outbox is empty"
    finally:
        pg.sql(f"DROP OWNED BY {role}")
        pg.sql(f"DROP ROLE {role}")


def test_outbox_hub_config_from_the_messagebus_config(pg, exchanges, conf):
    pg.create_table()
    res = run("--config", conf(exchanges(), outbox={"hub_config": pg.hub_conf}), "outbox", "status")
    assert res.returncode == 0 and "0 row(s), empty" in res.stdout


def test_outbox_flush_sends_everything(pg, exchanges, conf):
    pg.create_table()
    exchange = exchanges()
    path = conf(exchange, outbox={"batch_size": "4"})
    ids = pg.store(STORY * 3)
    consumer = Consumer(exchange, declare=False)
    try:
        res = run("--config", path, "outbox", "flush", "--hub-config", pg.hub_conf)
        got = consumer.collect(expect=len(ids))
    finally:
        consumer.close(delete_exchange=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "sent 27 message(s); the outbox is empty"
    progress = res.stderr.splitlines()
    assert progress[0].endswith(": 27 row(s)") and progress[-1].endswith(": 27/27")
    assert [r.message_id for r in got] == ids  # oldest first, each once
    assert pg.rows() == 0


def test_outbox_flush_sends_through_the_sender_thread(pg, exchanges, conf, capsys, monkeypatch):
    """One sending path (issue 17): flush hands its locked rows to the hub's sender thread
    (Hold.LOCKED: sent only while flush waits), settled there; and it ends with no thread left."""
    from koji_messagebus.delivery.outcomes import Outcomes
    from koji_messagebus.delivery.sender import SenderThread
    from koji_messagebus.delivery.ticket import Hold

    pg.create_table()
    exchange = exchanges()
    ids = pg.store(STORY * 2)
    submitted: list[tuple[Hold, int]] = []
    settled: list[str] = []
    submit, finish = SenderThread.submit, Outcomes.finish

    def recording_submit(self, messages, hold=Hold.MEMORY, *args, **kws):
        submitted.append((hold, len(messages)))
        return submit(self, messages, hold, *args, **kws)

    def recording_finish(self, item, lost):
        settled.append(item.msg.msg_id)
        return finish(self, item, lost)

    monkeypatch.setattr(SenderThread, "submit", recording_submit)
    monkeypatch.setattr(Outcomes, "finish", recording_finish)
    consumer = Consumer(exchange, declare=False)
    try:
        path = conf(exchange, outbox={"batch_size": "5"})
        assert cli.main(["--config", path, "outbox", "flush", "--hub-config", pg.hub_conf]) == 0
        got = consumer.collect(expect=len(ids))
    finally:
        consumer.close(delete_exchange=False)
    assert capsys.readouterr().out.strip() == "sent 18 message(s); the outbox is empty"
    assert submitted == [(Hold.LOCKED, 5)] * 3 + [(Hold.LOCKED, 3)]
    assert sorted(settled) == sorted(ids)  # settled by the sender thread, each once
    assert [r.message_id for r in got] == ids and pg.rows() == 0
    assert [t.name for t in threading.enumerate() if t.name.startswith("messagebus-")] == []


@pytest.mark.parametrize("case", ["unreachable", "password"])
def test_outbox_flush_stops_when_the_broker_fails(pg, exchanges, conf, case):
    pg.create_table()
    pg.store(STORY)
    broker = {"port": closed_port()} if case == "unreachable" else {"password": "wrong"}
    res = run("--config", conf(exchanges(), broker=broker), "outbox", "flush", "--hub-config", pg.hub_conf)
    assert res.returncode == 1
    assert res.stdout.strip() == "sent 0 message(s); stopped: the broker failed, 9 row(s) stay in the outbox"
    assert [line for line in res.stderr.splitlines() if line.startswith("error: ")][0].startswith(
        "error: broker 127.0.0.1:" if case == "unreachable" else "error: authentication with PLAIN")
    assert pg.rows() == 9


def test_outbox_flush_leaves_the_outbox_to_a_process_that_is_draining_it(pg, exchanges, conf, capsys, monkeypatch):
    """A hub process holding the drain lock longer than LOCK_WAIT is doing the job: flush says so
    and exits 0 (the timer's run is not a failure); the rows stay for that process."""
    from koji_messagebus.cli import outbox as outbox_cli

    pg.create_table()
    pg.store(STORY)
    monkeypatch.setattr(outbox_cli, "LOCK_WAIT", 0.5)
    holder = psycopg2.connect(DSN, options=f"-c search_path={pg.schema}")
    try:
        lock = f"SELECT pg_advisory_xact_lock(%(key)s::bigint # '{outbox.TABLE}'::regclass::oid::bigint)"
        holder.cursor().execute(lock, {"key": outbox_rows.DRAIN_LOCK})  # as a draining hub process holds it
        start = time.monotonic()
        assert cli.main(["--config", conf(exchanges()), "outbox", "flush", "--hub-config", pg.hub_conf]) == 0
        assert time.monotonic() - start < 5
    finally:
        holder.close()
    assert capsys.readouterr().out.strip() == ("sent 0 message(s); stopped: another process (a hub process) held "
                                               "the outbox's drain lock for 0.5s and is draining it")
    assert pg.rows() == 9


def test_outbox_database_problems(tmp_path, exchanges, conf):
    res = run("outbox", "status", "--hub-config", str(tmp_path / "missing.conf"))
    assert res.returncode == 1 and "hub config" in res.stderr and "not found" in res.stderr
    port = closed_port()
    bad = tmp_path / "hub.conf"
    bad.write_text(f"[hub]\nDBName = test\nDBUser = postgres\nDBHost = 127.0.0.1\nDBPort = {port}\n")
    res = run("outbox", "status", "--hub-config", str(bad))
    assert res.returncode == 1
    assert res.stderr.startswith(f"error: cannot connect to the hub database (database 'test' on 127.0.0.1:{port}")
    assert len(res.stderr.splitlines()) == 1
    res = run("--config", conf(exchanges(), broker={"port": "x"}), "outbox", "flush", "--hub-config", str(bad))
    assert res.returncode == 2 and "[broker] port = 'x' is invalid" in res.stderr


# ---- the cookbook ------------------------------------------------------------------------------
COOKBOOK = open(os.path.join(ROOT, "docs", "cookbook.md"), encoding="utf-8").read()


def test_cookbook_listen_recipes_show_what_they_promise(exchanges, conf):
    exchange = exchanges()
    path = conf(exchange)
    block = re.search(r"```sh\n(# every build of hello.*?)```", COOKBOOK, re.S).group(1)
    commands = [line for line in block.splitlines() if line.startswith("koji-messagebus listen")]
    assert len(commands) == 4
    listeners = []
    for command in commands:
        args = [a.strip("'") for a in command.split()[2:]]
        listeners.append(Listen("--config", path, "--timeout", "4", *args))
    failed_task = examples.task_state("OPEN", "FAILED")
    publish(path, [*STORY, ("postTaskStateChange", failed_task)])
    seen = []
    for listener in listeners:
        rc, lines, err = listener.finish()
        assert rc == 0, err
        seen.append([json.loads(line)["routing_key"] for line in lines])
    assert seen == [
        ["koji.event.BuildStateChange.state.hello"],  # completed only
        ["koji.event.Tag.f44-updates-candidate.hello.alice"],
        ["koji.event.TaskStateChange.build.state"],  # the failed one
        ["koji.event.RepoInit.f44-build", "koji.event.RepoDone.f44-build"],
    ]


def snippet(title: str) -> str:
    section = COOKBOOK.split(f"## {title}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("title, expected", [
    ("With pika (AMQP 0-9-1)", "koji.event.BuildStateChange.state.hello hello-2.12.1-3.fc44"),
    ("With proton (AMQP 1.0)", "koji.event.Tag.f44-updates-candidate.hello.alice alice hello-2.12.1-3.fc44"),
])
def test_cookbook_snippets_run(exchanges, conf, tmp_path, title, expected):
    exchange = exchanges()
    path = conf(exchange)
    code = snippet(title)
    assert '"koji.events"' in code
    script = tmp_path / "consumer.py"
    script.write_text(code.replace('"koji.events"', json.dumps(exchange)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline and proc.poll() is None:
            publish(path, STORY)  # again until the consumer, which starts on its own, is bound
            time.sleep(0.5)
        time.sleep(0.3)
    finally:
        proc.terminate()
        err = proc.stderr.read()
        proc.wait(timeout=10)
    assert lines, err
    assert {line.rstrip("\n") for line in lines} == {expected}  # only what the recipe selects


# ---- creating the exchange without the management plugin (docs/install.md, demo's hint) ------------
def _readme_declare_lines() -> list[str]:
    with open(os.path.join(ROOT, "docs", "install.md"), encoding="utf-8") as fh:
        section = fh.read()
    return [line.strip() for line in section.splitlines()
            if line.strip().startswith(("rabbitmqctl eval 'rabbit_exchange:declare", "python3 -c 'import pika"))]


@pytest.mark.skipif(not shutil.which("rabbitmqctl"), reason="needs rabbitmqctl of the local RabbitMQ")
def test_readme_and_hint_declare_the_exchange_on_rabbitmq(exchanges, conf):
    from koji_messagebus.rabbitmq import declare_hint

    ctl, with_pika = _readme_declare_lines()
    for command in (ctl.replace("koji.events", exchanges(declare=False)),
                    with_pika.replace("koji.events", exchanges(declare=False)).replace("python3", sys.executable)
                    .replace("USER:PASSWORD@BROKER", f"guest:guest@{AMQP_HOST}").replace(":5672", f":{AMQP_PORT}"),
                    declare_hint(load_config(conf(exchanges(declare=False))))):
        name = re.search(r"kmb\.cli\.[0-9a-f]+", command).group(0)
        for _ in range(2):  # idempotent
            res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
        conn, ch = channel()
        try:
            ch.exchange_declare(name, passive=True)  # raises if it does not exist
        finally:
            conn.close()
    res = run("--config", conf(name), "check")
    assert res.returncode == 0, res.stderr


def test_outbox_flush_leaves_a_running_processs_young_rows_to_it_unless_all(pg, exchanges, conf):
    """Young rows whose storing connection is still open belong to a running hub process (its sender
    sends them without a row lock): flush leaves them, so nothing arrives twice; `--all` sends them.
    Rows of a connection that is gone (a dead process) are flushed at any age."""
    pg.create_table()
    exchange = exchanges()
    path = conf(exchange)
    dead = pg.store(STORY[:3])  # stored by a connection closed since
    live = psycopg2.connect(DSN, options=f"-c search_path={pg.schema}")
    consumer = Consumer(exchange, declare=False)
    try:
        messages = [encode(format_event(CALLBACK_TYPES[cb], encode_datetime_recurse(kw), "koji.event"))
                    for cb, kw in STORY[3:5]]
        outbox.store(live, messages)
        live.commit()
        res = run("--config", path, "outbox", "flush", "--hub-config", pg.hub_conf)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == ("sent 3 message(s); 2 young row(s) left to the running hub process(es) "
                                      "sending them (--all sends them too)")
        assert [r.message_id for r in consumer.collect(expect=3)] == dead
        assert pg.rows() == 2
        res = run("--config", path, "outbox", "flush", "--all", "--hub-config", pg.hub_conf)
        assert res.returncode == 0 and res.stdout.strip() == "sent 2 message(s); the outbox is empty", res.stderr
        assert [r.message_id for r in consumer.collect(expect=2)] == [m.msg_id for m in messages]
    finally:
        live.close()
        consumer.close(delete_exchange=False)


def test_listen_validate_marks_messages_that_do_not_match(exchanges, conf):
    """Plugin messages match their schemas; one with a header of the wrong type is marked with the
    JSON path and reason (sent as the plugin would, with a broken tag name)."""
    path = conf(exchanges())
    listener = Listen("--config", path, "--validate", "--count", "3", "--timeout", "20")
    broken = examples.tag()
    broken["tag"] = {**broken["tag"], "name": 44}
    publish(path, [("postTag", examples.tag()), ("postRepoInit", examples.repo_init()), ("postTag", broken)])
    rc, lines, err = listener.finish()
    assert rc == 0, err
    records = [json.loads(line) for line in lines]
    assert ["schema_problems" in r for r in records] == [False, False, True]
    assert {"path": "$.headers.tag", "reason": "44 is not of type 'string'"} in records[2]["schema_problems"]
    assert "schema: 1 of 3 message(s) did not match their schema" in err


def test_spool_status_and_flush_send_the_spool_byte_for_byte(exchanges, conf, tmp_path):
    """`spool status` counts the files and messages; `spool flush` sends them (same message-ids,
    each once), deletes the files, and with the broker unreachable stops with exit 1, the rest kept."""
    from koji_messagebus.delivery.spool import Spool

    exchange = exchanges()
    directory = str(tmp_path / "spool")
    path = conf(exchange, broker={"spool_dir": directory})
    config = load_config(path)
    spool = Spool(directory)
    batches = [[encode(format_event(CALLBACK_TYPES[cb], encode_datetime_recurse(kw), config.topic.prefix))
                for cb, kw in STORY[i::2]] for i in (0, 1)]
    for batch in batches:
        spool.write(batch)
    down = run("--config", conf(exchange, broker={"spool_dir": directory, "port": closed_port()}), "spool", "flush")
    assert down.returncode == 1 and down.stderr.startswith("error: broker 127.0.0.1:"), down.stderr
    assert down.stdout.strip() == "sent 0 spooled message(s) from 0 file(s); 5 left in the spool"
    status = run("--config", path, "spool", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{directory}: 9 message(s) in 2 file(s), oldest written ")
    consumer = Consumer(exchange, declare=False)
    try:
        res = run("--config", path, "spool", "flush")
        got = consumer.collect(expect=9)
    finally:
        consumer.close(delete_exchange=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "sent 9 spooled message(s) from 2 file(s)"
    assert sorted(r.message_id for r in got) == sorted(m.msg_id for b in batches for m in b)
    assert spool.summary() == (0, 0, None)
