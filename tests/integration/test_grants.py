"""The outbox's GRANTs (outbox.GRANTS, quoted by docs/install.md and `check`) are exactly sufficient.

The table is owned by one role and used by another, unprivileged one (the hub's database user),
as on a hub whose schema was installed by a DBA.  With exactly the grants, the plugin stores,
sends and drains; with any one of them missing, `check` names it, and the hub still commits.
"""

from __future__ import annotations

import os
import re

import koji.plugin
import psycopg2
import pytest

from devkit.recorded import entries
from koji_messagebus.cli import outbox_admin
from koji_messagebus.cli.check import check_outbox
from koji_messagebus.config.settings import load_config
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.transaction import outbox
from tests.support.hub import DSN, Hub, dml, load_plugin, unload_plugin
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration

PID = os.getpid()
OWNER, HUB, SCHEMA = f"kmb_owner_{PID}", f"kmb_hubuser_{PID}", f"kmb_grants_{PID}"


def admin(statements: str) -> None:
    cnx = psycopg2.connect(DSN)
    cnx.autocommit = True
    try:
        with cnx.cursor() as cur:
            cur.execute(statements)
    finally:
        cnx.close()


def grant_list() -> list[str]:
    """Each privilege of outbox.GRANTS as its own GRANT statement."""
    out = []
    for line in outbox.grants(HUB).strip().splitlines():
        m = re.match(r"GRANT (.+?) ON (.+) TO (.+);", line)
        assert m, line
        out += [f"GRANT {p.strip()} ON {m.group(2)} TO {m.group(3)};" for p in m.group(1).split(",")]
    return out


@pytest.fixture
def roles():
    """OWNER owns the schema, the outbox and the hub's table; HUB may log in and use the schema."""
    admin(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; DROP ROLE IF EXISTS {HUB}; DROP ROLE IF EXISTS {OWNER};"
          f"CREATE ROLE {OWNER}; CREATE ROLE {HUB} LOGIN; CREATE SCHEMA {SCHEMA} AUTHORIZATION {OWNER};"
          f"SET ROLE {OWNER}; SET search_path = {SCHEMA}; {outbox.SCHEMA}"
          "CREATE TABLE hub_rows (id SERIAL PRIMARY KEY, note TEXT NOT NULL);"
          f"GRANT USAGE ON SCHEMA {SCHEMA} TO {HUB}; GRANT ALL ON hub_rows, hub_rows_id_seq TO {HUB};")
    yield
    admin(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; DROP OWNED BY {HUB}; DROP ROLE IF EXISTS {HUB}; "
          f"DROP ROLE IF EXISTS {OWNER}")


def as_owner(statements: list[str]) -> None:
    admin(f"SET ROLE {OWNER}; SET search_path = {SCHEMA}; " + " ".join(statements))


def hub_connect():
    cnx = psycopg2.connect(f"dbname=test host=127.0.0.1 user={HUB}", options=f"-c search_path={SCHEMA}")
    cnx.set_client_encoding("UTF8")
    return cnx


def owner_sql(query: str):
    cnx = psycopg2.connect(DSN, options=f"-c search_path={SCHEMA}")
    try:
        with cnx.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()
    finally:
        cnx.close()


@pytest.fixture
def hub_conf(tmp_path, monkeypatch):
    path = tmp_path / "hub.conf"
    path.write_text(f"[hub]\nDBName = test\nDBUser = {HUB}\nDBHost = 127.0.0.1\nDBPort = 5432\n")
    monkeypatch.setenv("PGOPTIONS", f"-c search_path={SCHEMA}")
    return str(path)


def run_requests(monkeypatch, conf_file, exchange_name, count: int) -> tuple[list, list[str]]:
    """`count` hub requests as HUB with the outbox on (the first one drains, the rest send their own)."""
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(outbox={"enabled": True}))
    consumer = Consumer(exchange_name)
    load_plugin()
    h = Hub(hub_connect())
    kwargs = entries("postTag")[0]["kwargs"]

    def handler(cur):
        dml("INSERT INTO hub_rows (note) VALUES ('r')")
        koji.plugin.run_callbacks("postTag", **kwargs)

    try:
        for _ in range(count):
            h.request(handler)
        got = consumer.collect(expect=count, quiet=0.5)
    finally:
        unload_plugin()
        h.close()
        consumer.close()
    return got, [r[0] for r in owner_sql("SELECT note FROM hub_rows")]


def test_exactly_the_documented_grants_suffice(roles, monkeypatch, conf_file, exchange_name, hub_conf, capsys,
                                               plugin_log):
    as_owner(grant_list())
    cnx = hub_connect()
    try:
        assert outbox_admin.check_privileges(cnx) == []
        # every outbox statement, as the hub's user: store, send own rows, delete sent rows, drain (advisory lock,
        # expire, FOR UPDATE SKIP LOCKED), status, purge
        kwargs = entries("postTag")[0]["kwargs"]
        from koji_messagebus.runtime import RequestBatch, Runtime
        rt, batch = Runtime(load_config(conf_file())), RequestBatch()
        for _ in range(4):
            rt.collect(batch, "Tag", kwargs)
        rt.close()
        ids = outbox.store(cnx, batch.messages)
        cnx.commit()
        sent: list[str] = []

        def send(messages):
            sent.extend(m.msg_id for m in messages)
            return SendResult(accepted=list(messages))

        own = outbox_rows.drain_ids(cnx, ids[:2], send)  # a process's own rows, under row locks
        drained = outbox_rows.drain(cnx, send, 500, max_age=3600)
        assert (own.sent, drained.sent, drained.locked_out) == (2, 2, False)
        assert sorted(sent) == sorted(m.msg_id for m in batch.messages)
        assert outbox_admin.status(cnx) == (0, None)
        assert outbox_rows.delete(cnx, ids[:2]) == 0  # the sender's batched deletes (gone already)
        assert outbox_admin.purge(cnx, 0.001) == 0
    finally:
        cnx.close()
    # the plugin end to end, as the hub's user
    got, rows = run_requests(monkeypatch, conf_file, exchange_name, 3)
    assert len(got) == 3 and rows == ["r"] * 3
    assert "permission denied" not in plugin_log.text
    config = load_config(conf_file(outbox={"enabled": True}))
    assert check_outbox(config, hub_conf) == 0
    assert "ok: outbox table" in capsys.readouterr().out


@pytest.mark.parametrize("left_out", range(5), ids=["SELECT", "INSERT", "UPDATE", "DELETE", "USAGE-seq"])
def test_one_grant_less_check_names_it_and_the_hub_still_commits(roles, left_out, monkeypatch, conf_file,
                                                                 exchange_name, hub_conf, capsys):
    grants = grant_list()
    missing = grants.pop(left_out)
    as_owner(grants)
    config = load_config(conf_file(outbox={"enabled": True}))
    assert check_outbox(config, hub_conf) == 1
    err = capsys.readouterr().err
    privilege = missing.split()[1]
    assert f"lacks {privilege}" in err, err
    assert outbox.grants(HUB).split()[1] in err  # the fix, quoted
    got, rows = run_requests(monkeypatch, conf_file, exchange_name, 2)
    assert rows == ["r", "r"]  # the hub's own rows commit whatever the outbox can do
    if privilege in ("INSERT", "USAGE"):  # nothing stored: sent directly
        assert len(got) == 2


def test_install_page_quotes_the_grants():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "install.md"), encoding="utf-8").read()
    assert outbox.grants("koji").strip().splitlines()[0] in readme
