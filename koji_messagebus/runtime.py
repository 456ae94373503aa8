"""The request cycle, independent of koji: collect -> store (preCommit) -> send (postCommit).

One `Runtime` per hub process holds the config, the sender thread and the backlogs; each request
has its own `RequestBatch`.  Nothing here raises into the caller for broker or database trouble:
problems are logged with what was lost or deferred.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from koji_messagebus.config.settings import Config, ConfigError, load_config
from koji_messagebus.delivery.handoff import Delivery, database_connector
from koji_messagebus.delivery.status import StatusFile, snapshot
from koji_messagebus.format.messages import format_event, unsigned
from koji_messagebus.format.sizerule import encode_within
from koji_messagebus.format.wire import Outgoing, describe, encode
from koji_messagebus.log import flush_causes, log, log_cause
from koji_messagebus.transaction import outbox
from koji_messagebus.transaction.subcalls import SubcallMarks, aborted, split

OUTBOX_RETRY_SECONDS = 300.0


@dataclass
class RequestBatch:
    """The messages of one hub request."""

    messages: list[Outgoing] = field(default_factory=list)
    outbox_ids: list[int] | None = None
    #: the database backend that stored them (outbox.Stored.backend)
    outbox_owner: int | None = None
    seconds: float = 0.0
    #: which sub-call each message came from, marked in the hub's transaction (subcalls.py)
    marks: SubcallMarks = field(default_factory=SubcallMarks)


class Runtime:
    """Per-process plugin state."""

    def __init__(self, config: Config | None = None, config_path: str | None = None):
        self.delivery: Delivery | None = None
        self.config: Config | None = config
        if config is None:
            try:
                self.config = load_config(config_path)
            except ConfigError as exc:
                for problem in exc.problems:  # one record a problem, each one line
                    log.logger.error("messagebus plugin disabled: %s", problem)  # its own wording, no prefix
        self._lock = threading.Lock()
        self._shut = False
        #: hub threads between preCommit and the end of postCommit (thread id -> monotonic since):
        #: the exit waits for them, as mod_wsgi runs its shutdown hook while requests still run
        self._committing: dict[int, float] = {}
        self._outbox_broken_until = 0.0
        if self.config:
            for warning in self.config.warnings:
                log.warning("%s", warning)

    # ---- the request cycle -----------------------------------------------------------------
    def collect(self, batch: RequestBatch, msg_type: str, kwargs: Mapping[str, Any], cnx: Any = None,
                method: Any = None, params: Any = None) -> None:
        """Format and encode one event into the request's batch.  With the hub's `cnx`, the event's
        sub-call (`method`, `params`: koji's context.method/params) is marked in the hub's
        transaction, so that preCommit can tell whether the hub kept it (subcalls.py)."""
        start = time.perf_counter()
        cfg = self.config
        if unsigned(msg_type, kwargs) and not (cfg and cfg.topic.unsigned_rpm_sign):
            log.debug("RPMSign without a sigkey (an unsigned import) not published ([topic] unsigned_rpm_sign)")
            return
        prefix = cfg.topic.prefix if cfg else "koji.event"
        event = format_event(msg_type, kwargs, prefix, convert=False)  # encode converts, in one pass
        to = cfg.exchange.message_to(event.routing_key) if cfg else None
        if cfg is None:
            batch.messages.append(encode(event, to=to))
        else:
            batch.messages.append(encode_within(event, to, cfg.message.max_size, cfg.message.ttl, encoder=encode))
        if event.conversions.lossy:
            log.warning("%s %s: values converted: %s", msg_type, event.routing_key,
                        "; ".join(event.conversions.lossy))
        if event.conversions.lossless and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: values converted: %s", msg_type, "; ".join(event.conversions.lossless))
        batch.marks.add(cnx if cfg is not None else None, method, params)
        batch.seconds += time.perf_counter() - start

    def pre_commit(self, batch: RequestBatch, cnx: Any) -> None:
        """Before the hub's COMMIT: drop the messages of sub-calls the hub rolled back, and store the
        rest in the outbox inside the hub's transaction (when enabled), in one round trip.  Nothing
        here can abort, roll back or hold up the hub's transaction for long (outbox.store_request);
        if the outbox cannot take the messages, they are sent directly after the COMMIT."""
        if not batch.messages:
            return
        start = time.perf_counter()
        self._committing[threading.get_ident()] = time.monotonic()
        try:
            self._pre_commit(batch, cnx)
        finally:
            batch.seconds += time.perf_counter() - start

    def _pre_commit(self, batch: RequestBatch, cnx: Any) -> None:
        cfg = self.config
        use_outbox = (cfg is not None and cfg.outbox.enabled and not cfg.broker.test_mode
                      and cnx is not None and time.monotonic() >= self._outbox_broken_until)
        if not use_outbox:
            if cnx is not None and batch.marks.checked():  # a multicall: which sub-calls survived
                self._keep_survivors(batch, outbox.survivors(cnx.cursor()))
            elif cnx is not None and aborted(cnx):  # its COMMIT rolls back (told without a round trip)
                self._keep_survivors(batch, None)
            return
        stored = outbox.store_request(cnx, batch.messages, batch.marks.of)
        self._keep_survivors(batch, stored.survivors)
        if stored.ids is not None:
            batch.outbox_ids = stored.ids
            batch.outbox_owner = stored.backend
            return
        if stored.survivors is None or not batch.messages:
            return
        if stored.back_off:
            self._outbox_broken_until = time.monotonic() + OUTBOX_RETRY_SECONDS
            log_cause(stored.cause, logging.ERROR, "%s; sending directly for the next %ds; the hub's transaction "
                      "is unaffected", stored.problem, OUTBOX_RETRY_SECONDS)
        else:  # every request while a lock is held: one line a minute, with the count
            log_cause(stored.cause, logging.WARNING, "%s; the hub's transaction is unaffected", stored.problem,
                      counted="request(s) sent directly")

    @staticmethod
    def _keep_survivors(batch: RequestBatch, alive: frozenset[str] | None) -> None:
        """Keep only the messages whose change the hub's COMMIT will commit."""
        if alive is not None and not batch.marks.checked():
            return
        kept, dropped = split(batch.messages, batch.marks.of, alive)
        if dropped:
            why = ("its transaction is aborted, so its COMMIT rolls back" if alive is None
                   else "a multicall sub-call failed and was rolled back to its savepoint")
            log.info("not published: the hub rolled back the change (%s): %s", why, describe(dropped))
        batch.messages = kept
        batch.marks = SubcallMarks(of=[None] * len(kept))

    def post_commit(self, batch: RequestBatch, cnx: Any) -> None:
        """Hand the batch to the process's sender after the hub committed; wait for its settlements (bounded)."""
        start = time.perf_counter()
        try:
            self._post_commit(batch, cnx)
        finally:
            self._committing.pop(threading.get_ident(), None)
            batch.seconds += time.perf_counter() - start
            if batch.messages:
                log.debug("request spent %.2f ms in the plugin", batch.seconds * 1000)

    def _post_commit(self, batch: RequestBatch, cnx: Any) -> None:
        cfg = self.config
        if cfg is None:
            if batch.messages:
                log.error("lost %s: the plugin is disabled by its config error (see above)",
                          describe(batch.messages))
            return
        if cfg.broker.test_mode:
            for msg in batch.messages:
                log.info("messagebus test_mode: would send %s", render(msg))
            return
        usable = time.monotonic() >= self._outbox_broken_until
        if batch.messages:
            self.ensure_delivery().post_commit(batch.messages, batch.outbox_ids, cnx, spent=batch.seconds,
                                               owner=batch.outbox_owner, outbox_usable=usable)
        elif self.delivery is not None and self.delivery.drainer is None and cnx is not None:
            # the request-path fallback's deletes and drain
            self.delivery.post_commit([], [], cnx, outbox_usable=usable)

    def settings(self) -> Config:
        """The config, on paths that only run with one (post_commit returns early without)."""
        assert self.config is not None, "the plugin is disabled by its config error"
        return self.config

    def ensure_delivery(self) -> Delivery:
        """The process's delivery path (sender thread, drainer), started at the first request that sends."""
        delivery = self.delivery
        if delivery is None:
            with self._lock:
                if self.delivery is None:
                    cfg = self.settings()
                    connect_db = database_connector(cfg) if cfg.outbox.enabled else None
                    self.delivery = Delivery(cfg, connect_db=connect_db)
                    sender = self.delivery.sender
                    sender.status = StatusFile(cfg.status.dir, lambda: snapshot(sender))
                    if self._shut:  # the process is exiting: a closed sender (what comes is spooled or kept)
                        sender.close(0.0)
                delivery = self.delivery
        return delivery

    def shutdown(self) -> None:
        """Process exit (plugin.py registers it with atexit and mod_wsgi): within [broker] timeout,
        send what is held, delete settled outbox rows, close the connections.  Runs once."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        try:
            if self.config is not None:
                budget = float(self.config.broker.timeout)
                deadline = time.monotonic() + budget
                self._wait_committing(time.monotonic() + budget / 2)
                delivery = self.delivery
                if delivery is not None:  # kept: a request still running hands over late (Delivery._late)
                    delivery.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - an exit hook must not raise
            log.exception("clean exit failed")
        flush_causes(force=True)  # the counts not said yet
        self.close()

    def _wait_committing(self, until: float) -> None:
        """Exit: let requests past their preCommit hand their messages to the sender first (bounded;
        one whose COMMIT failed never ends its postCommit)."""
        while self._committing and time.monotonic() < until:
            time.sleep(0.005)

    def close(self) -> None:
        if self.delivery is not None:
            self.delivery.close()


def render(msg: Outgoing) -> str:
    """One line for logs and test_mode: key, headers and body as JSON."""
    from koji_messagebus.format.wire import decode

    data = decode(msg.payload)
    return json.dumps({"routing_key": msg.routing_key, "id": msg.msg_id, "headers": data["headers"],
                       "body": data["body"]}, default=repr, sort_keys=True)
