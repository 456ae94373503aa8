"""Per broker: the 3-message warm request through the plugin's request cycle, and the bare transport.

    .venv/bin/python bench/brokers.py [--broker rabbitmq3 --broker artemis ...] [--requests 300]

For each broker (as scripts/services/*.sh start them, see devkit/brokers.py; `--url amqp://HOST:PORT`
with `--user`/`--password` for another) it times, on a warm connection with `address = auto`:
- `request`: what one hub request of 3 events costs in postCommit (Runtime.post_commit, no outbox),
  the same measure as bench/run.py's "3 messages" row;
- `send`: AmqpConnection.send of the 3 encoded messages (send all, wait for the 3 settlements).
On RabbitMQ an exclusive queue (at most 1000 messages, oldest dropped) is bound with `#`, so
messages are routed; Artemis and Broker-J accept and drop messages for addresses nobody subscribed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.brokers import DEFAULTS  # noqa: E402
from devkit.recorded import entries  # noqa: E402
from koji_messagebus.amqp import AmqpConnection  # noqa: E402
from koji_messagebus.config.settings import load_config  # noqa: E402
from koji_messagebus.format.messages import CALLBACK_TYPES, format_event  # noqa: E402
from koji_messagebus.format.wire import encode  # noqa: E402
from koji_messagebus.runtime import RequestBatch, Runtime  # noqa: E402

perf = time.perf_counter


def three_events() -> list[tuple[str, dict]]:
    """The first 3 events of one recorded `importRPM src` call (bench/run.py's 3-message request)."""
    found = sorted((e["seq"], cb, e["kwargs"]) for cb in CALLBACK_TYPES for e in entries(cb)
                   if e["api_call"] == "importRPM src")
    return [(CALLBACK_TYPES[cb], kw) for _, cb, kw in found[:3]]


def write_config(path: Path, url: str, user: str, password: str, exchange: str) -> str:
    path.write_text(f"[broker]\nurls = {url}\nauth = PLAIN\nusername = {user}\npassword = {password}\n"
                    "timeout = 5\nconnect_timeout = 5\n"
                    f"[exchange]\nname = {exchange}\ntype = topic\ndurable = false\naddress = auto\n")
    path.chmod(0o600)
    return str(path)


def bind_queue(url: str, user: str, password: str, exchange: str, declare: bool):
    """A pika connection holding an exclusive queue bound with '#' (kept short: drop-head at 1000)."""
    import pika

    host, port = url.split("//", 1)[1].split(":")
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host, int(port), credentials=pika.PlainCredentials(user, password)))
    ch = conn.channel()
    if declare:
        ch.exchange_declare(exchange, "topic", durable=False, auto_delete=True)
    queue = ch.queue_declare("", exclusive=True, arguments={"x-max-length": 1000}).method.queue
    ch.queue_bind(queue, exchange, "#")
    return conn


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def bench(url: str, user: str, password: str, n: int, warm: int) -> dict[str, object]:
    exchange = f"kmb.bench.{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        conf = write_config(Path(tmp) / "b.conf", url, user, password, exchange)
        cfg = load_config(conf)
        conn = AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
        consumer = None
        if url.endswith(":5672"):  # RabbitMQ 3.x cannot create it over AMQP 1.0
            consumer = bind_queue(url, user, password, exchange, declare=True)
        conn.open(time.monotonic() + 10)  # creates the exchange where the broker allows
        broker = str(conn.broker)
        if broker.startswith("RabbitMQ 4") and consumer is None:  # else every message is `released`
            consumer = bind_queue(url, user, password, exchange, declare=False)
        events = three_events()
        msgs = [encode(format_event(t, kw, "koji.event")) for t, kw in events]
        sends = []
        for i in range(n + warm):
            t0 = perf()
            out = conn.send(msgs, time.monotonic() + 5)
            if i >= warm:
                sends.append(perf() - t0)
            if out.error or out.lost:
                raise RuntimeError(f"{broker}: {out.error or out.lost}")
        conn.close()
        rt = Runtime(config=cfg)
        requests = []
        try:
            for i in range(n + warm):
                batch = RequestBatch()
                for t, kw in events:
                    rt.collect(batch, t, kw)
                t0 = perf()
                rt.post_commit(batch, None)
                if i >= warm:
                    requests.append(perf() - t0)
        finally:
            rt.close()
    if consumer is not None:
        consumer.close()
    return {"broker": broker, "url": url, "request_ms": median_ms(requests),
            "request_p95_ms": sorted(requests)[int(0.95 * (len(requests) - 1))] * 1000,
            "send_ms": median_ms(sends)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", action="append", choices=sorted(DEFAULTS),
                        help="a broker of scripts/services (repeatable; default: all)")
    parser.add_argument("--url", help="another broker: amqp://HOST:PORT (with --user, --password)")
    parser.add_argument("--user", default="guest")
    parser.add_argument("--password", default="guest")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warm", type=int, default=20)
    args = parser.parse_args()
    targets = [(args.url, args.user, args.password)] if args.url else [
        (f"amqp://127.0.0.1:{DEFAULTS[b]['port']}", DEFAULTS[b]["user"], DEFAULTS[b]["password"])
        for b in (args.broker or list(DEFAULTS))]
    print("| broker | 3-message warm request, median (ms) | p95 (ms) | transport send of 3, median (ms) |")
    print("|---|---|---|---|")
    for url, user, password in targets:
        r = bench(url, user, password, args.requests, args.warm)
        print(f"| {r['broker']} ({r['url']}) | {r['request_ms']:.2f} | {r['request_p95_ms']:.2f} | "
              f"{r['send_ms']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
