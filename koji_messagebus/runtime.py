"""The request cycle, independent of koji: collect -> store (preCommit) -> send (postCommit).

One `Runtime` per hub process holds the config, the publisher and the backlogs; each request
has its own `RequestBatch`.  Nothing here raises into the caller for broker or database trouble:
problems are logged with what was lost or deferred.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import outbox
from .backlog import MemoryBacklog
from .config import Config, ConfigError, load_config
from .delivery import Delivery, database_connector
from .log import log
from .messages import format_event, unsigned
from .publisher import Publisher, SendResult
from .sizerule import encode_within
from .status import StatusFile, snapshot
from .subcalls import SubcallMarks, rollback_quietly, split
from .wire import Outgoing, encode

OUTBOX_RETRY_SECONDS = 300.0
LOCKED_OUT_RETRY = 1.0  # lock design: seconds before a process that lost the drain-lock race looks again


@dataclass
class RequestBatch:
    """The messages of one hub request."""

    messages: list[Outgoing] = field(default_factory=list)
    outbox_ids: list[int] | None = None
    seconds: float = 0.0
    #: which sub-call each message came from, marked in the hub's transaction (subcalls.py)
    marks: SubcallMarks = field(default_factory=SubcallMarks)


def describe(messages: list[Outgoing], limit: int = 10) -> str:
    """'3 message(s) (Tag x2, BuildStateChange x1): key1, key2, ...' for log lines."""
    types = Counter(m.type for m in messages)
    keys = [m.routing_key for m in messages[:limit]]
    more = f" and {len(messages) - limit} more" if len(messages) > limit else ""
    kinds = ", ".join(f"{t} x{n}" for t, n in types.items())
    return f"{len(messages)} message(s) ({kinds}): {', '.join(keys)}{more}"


class Runtime:
    """Per-process plugin state."""

    def __init__(self, config: Config | None = None, config_path: str | None = None, design: str = "thread"):
        #: "thread": the process's sender thread shares one connection (delivery.py); "lock": each hub
        #: thread sends under one lock (publisher.LockedPublisher, the design before; for comparison)
        self.design = design
        self.delivery: Delivery | None = None
        self.config: Config | None = config
        if config is None:
            try:
                self.config = load_config(config_path)
            except ConfigError as exc:
                for problem in exc.problems:  # one record a problem, each one line
                    log.logger.error("messagebus plugin disabled: %s", problem)  # its own wording, no prefix
        self.publisher: Publisher | None = None
        self.backlog = MemoryBacklog(self.config.get("broker", "max_pending") if self.config else 0)
        self._lock = threading.Lock()
        self._shut = False
        self._outbox_broken_until = 0.0
        self._outbox_check_at = 0.0
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
        prefix = cfg.get("topic", "prefix") if cfg else "koji.event"
        event = format_event(msg_type, kwargs, prefix, convert=False)  # encode converts, in one pass
        to = cfg.message_to(event.routing_key) if cfg else None
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
        try:
            self._pre_commit(batch, cnx)
        finally:
            batch.seconds += time.perf_counter() - start

    def _pre_commit(self, batch: RequestBatch, cnx: Any) -> None:
        cfg = self.config
        use_outbox = (cfg is not None and cfg.get("outbox", "enabled") and not cfg.get("broker", "test_mode")
                      and cnx is not None and time.monotonic() >= self._outbox_broken_until)
        if not use_outbox:
            if cnx is not None and batch.marks.checked():
                self._keep_survivors(batch, outbox.survivors(cnx.cursor()))
            return
        stored = outbox.store_request(cnx, batch.messages, batch.marks.of)
        self._keep_survivors(batch, stored.survivors)
        if stored.ids is not None:
            batch.outbox_ids = stored.ids
            return
        if stored.survivors is None or not batch.messages:
            return
        if stored.back_off:
            self._outbox_broken_until = time.monotonic() + OUTBOX_RETRY_SECONDS
            log.error("%s; sending directly for the next %ds; the hub's transaction is unaffected",
                      stored.problem, OUTBOX_RETRY_SECONDS)
        else:
            log.warning("%s; sending these %d message(s) directly; the hub's transaction is "
                        "unaffected", stored.problem, len(batch.messages))

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
        """Send the batch (and any backlog) after the hub committed; wait for settlement."""
        start = time.perf_counter()
        try:
            self._post_commit(batch, cnx)
        finally:
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
        if cfg.get("broker", "test_mode"):
            for msg in batch.messages:
                log.info("messagebus test_mode: would send %s", render(msg))
            return
        if self.design == "thread":
            if batch.messages:
                self.delivery_().post_commit(batch.messages, batch.outbox_ids, cnx, spent=batch.seconds)
            elif self.delivery is not None and self.delivery.drainer is None and cnx is not None:
                self.delivery.post_commit([], [], cnx)  # the request-path fallback's deletes and drain
            return
        # messages not in the outbox (outbox off, or unusable for this request), after older ones kept in memory
        direct = batch.messages if batch.outbox_ids is None else []
        if direct or len(self.backlog):
            self._send_direct(direct)
        if cfg.get("outbox", "enabled") and self._outbox_due(cnx):
            # now and then, and after a failure: everything, oldest first, with the drain lock
            result = self._drain_outbox(cnx, batch.outbox_ids or [])
            own = batch.outbox_ids or []
            if result is not None and own and (result.left or len(own) > cfg.get("outbox", "batch_size")):
                self._send_own(cnx, batch)  # own rows the drain's one batch left: always sent before returning
        elif batch.outbox_ids:
            self._send_own(cnx, batch)  # the steady state: only this request's rows

    def _send_own(self, cnx: Any, batch: RequestBatch) -> None:
        """Send this request's outbox rows only (older rows wait for the next drain, at most
        retry_interval away); anything left makes the next request drain, oldest first."""
        ids = batch.outbox_ids or []
        if self.publisher_().seconds_left() > 0:
            log.debug("broker unavailable; %d message(s) kept in the outbox", len(ids))
            self._outbox_check_at = 0.0
            return
        try:
            result = outbox.send_own(cnx, ids, batch.messages, self._send_for_outbox,
                                     keep=self.settings().get("outbox", "keep"))
        except Exception as exc:
            self._outbox_failed(cnx, exc)
            return
        if result.left:
            self._outbox_check_at = 0.0

    def _send_direct(self, messages: list[Outgoing]) -> None:
        """Send older messages kept in memory, then these; at most one batch beyond this request's
        size, oldest first, so that a long backlog costs one request no more than one batch."""
        pending = self.backlog.take() + messages
        if not pending:
            return
        limit = max(self.settings().get("outbox", "batch_size"), len(messages))
        pending, later = pending[:limit], pending[limit:]
        result = self.publisher_().send(pending)
        self._report(result)
        if result.unsent or later:
            overflow = self.backlog.put_back(result.unsent + later)
            if overflow:
                log.error("lost %s: in-memory backlog full (max_pending = %d); enable the "
                          "outbox to keep messages in the database", describe(overflow), self.backlog.limit)

    def _outbox_due(self, cnx: Any) -> bool:
        """Look for a backlog left by other processes now and then (not on every request)."""
        now = time.monotonic()
        return cnx is not None and now >= self._outbox_check_at and now >= self._outbox_broken_until

    def _drain_outbox(self, cnx: Any, own_ids: list[int]) -> outbox.DrainResult | None:
        cfg = self.settings()
        publisher = self.publisher_()
        if publisher.seconds_left() > 0:
            # the breaker is open: no SQL, no network; the rows wait for a later request or `flush`
            if own_ids:
                log.debug("broker unavailable; %d message(s) kept in the outbox", len(own_ids))
            return None
        try:
            result = outbox.drain(cnx, self._send_for_outbox, cfg.get("outbox", "batch_size"), own_ids,
                                  max_age=cfg.get("outbox", "max_age"), keep=cfg.get("outbox", "keep"))
        except Exception as exc:
            self._outbox_failed(cnx, exc)
            return None
        if result.expired:
            log.error("dropped %d outbox message(s) older than max_age = %ss (never delivered)",
                      result.expired, cfg.get("outbox", "max_age"))
        retry = cfg.get("broker", "retry_interval")
        if result.locked_out:
            retry = min(retry, LOCKED_OUT_RETRY)  # another process drains: look again soon, not retry_interval away
        self._outbox_check_at = time.monotonic() + (0 if result.left else retry)
        return result

    def _outbox_failed(self, cnx: Any, exc: Exception) -> None:
        """A database error while sending from the outbox (the broker's are in the results)."""
        rollback_quietly(cnx)
        if outbox.is_undefined_table(exc):
            self._outbox_broken_until = time.monotonic() + OUTBOX_RETRY_SECONDS
        # the rows stay: the drain takes them, at the latest after retry_interval (one error line each time)
        self._outbox_check_at = time.monotonic() + self.settings().get("broker", "retry_interval")
        log.error("outbox drain failed, messages stay in the outbox: %s", str(exc).strip())

    def _send_for_outbox(self, messages: list[Outgoing]) -> tuple[list[Outgoing], list[Outgoing]]:
        result = self.publisher_().send(messages)
        self._report(result, kept="kept in the outbox")
        return result.split()

    def _report(self, result: SendResult, kept: str = "kept in memory for the next request") -> None:
        if result.lost:
            by_reason: dict[str, list[Outgoing]] = {}
            for msg, reason in result.lost:
                by_reason.setdefault(reason, []).append(msg)
            for reason, msgs in by_reason.items():
                log.error("lost %s: the broker answered %s", describe(msgs), reason)
        if result.unsent:
            if result.tried:
                retry = self.publisher.seconds_left() if self.publisher else 0.0
                log.error("not sent (%s), %s (next try in %.1fs): %s", result.error, kept, retry,
                          describe(result.unsent))
            elif log.isEnabledFor(logging.DEBUG):  # the breaker is open: the failure was logged when it happened
                log.debug("not sent (%s), %s: %s", result.error, kept, describe(result.unsent))
        elif result.error:
            log.warning("%s", result.error)

    def settings(self) -> Config:
        """The config, on paths that only run with one (post_commit returns early without)."""
        assert self.config is not None, "the plugin is disabled by its config error"
        return self.config

    def delivery_(self) -> Delivery:
        delivery = self.delivery
        if delivery is None:
            with self._lock:
                if self.delivery is None:
                    cfg = self.settings()
                    connect_db = database_connector(cfg) if cfg.get("outbox", "enabled") else None
                    self.delivery = Delivery(cfg, connect_db=connect_db)
                    sender = self.delivery.sender
                    sender.status = StatusFile(cfg.status.dir, lambda: snapshot(sender))
                delivery = self.delivery
        return delivery

    def publisher_(self) -> Publisher:
        publisher = self.publisher
        if publisher is None:
            with self._lock:
                if self.publisher is None:
                    self.publisher = Publisher(self.settings())
                publisher = self.publisher
        return publisher

    def shutdown(self) -> None:
        """Process exit (plugin.py registers it with atexit and mod_wsgi): within [broker] timeout,
        send what is held, delete settled outbox rows, close the connections.  Runs once."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        try:
            if self.delivery is not None and self.config is not None:
                self.delivery.shutdown(float(self.config.get("broker", "timeout")))
                self.delivery = None
        except Exception:  # noqa: BLE001 - an exit hook must not raise
            log.exception("clean exit failed")
        self.close()

    def close(self) -> None:
        if self.delivery is not None:
            self.delivery.close()
        if self.publisher is not None:
            self.publisher.close()


def render(msg: Outgoing) -> str:
    """One line for logs and test_mode: key, headers and body as JSON."""
    from .wire import decode

    data = decode(msg.payload)
    return json.dumps({"routing_key": msg.routing_key, "id": msg.msg_id, "headers": data["headers"],
                       "body": data["body"]}, default=repr, sort_keys=True)
