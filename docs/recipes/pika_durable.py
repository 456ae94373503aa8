"""A durable subscription on RabbitMQ 3.x or 4.x over AMQP 0-9-1 (pika).

A named durable queue bound to the exchange keeps collecting messages while this consumer is
down; each message is acknowledged only after it was handled (at-least-once), and duplicates
(same message-id) are dropped.  Decoded with koji_messagebus.consumer: no 65,535-value limit.
"""

import os
import sys

import pika

from koji_messagebus.consumer import Seen, from_pika

HOST = os.environ.get("KOJI_BUS_HOST", "127.0.0.1")
PORT = int(os.environ.get("KOJI_BUS_PORT", "5672"))
USER = os.environ.get("KOJI_BUS_USER", "guest")
PASSWORD = os.environ.get("KOJI_BUS_PASSWORD", "guest")
EXCHANGE = os.environ.get("KOJI_BUS_EXCHANGE", "koji.events")
QUEUE = os.environ.get("KOJI_BUS_QUEUE", "tag-watcher")  # one name per consumer application
BINDINGS = ["koji.event.Tag.f44-updates-candidate.*.*"]
COUNT = int(os.environ.get("KOJI_BUS_COUNT", "0"))  # stop after this many messages (0: never)

seen = Seen()
handled = 0


def handle(channel, method, properties, body):
    global handled
    msg = from_pika(method, properties, body)
    if seen.first(msg.id):
        print(msg.to_json(), flush=True)  # your code here
    channel.basic_ack(method.delivery_tag)  # after handling: a crash before this means a redelivery
    handled += 1
    if COUNT and handled >= COUNT:
        channel.stop_consuming()


connection = pika.BlockingConnection(pika.ConnectionParameters(
    HOST, PORT, credentials=pika.PlainCredentials(USER, PASSWORD)))
channel = connection.channel()
# durable: survives a broker restart; the limits keep a forgotten queue from filling the broker
channel.queue_declare(QUEUE, durable=True, arguments={
    "x-queue-type": "quorum",  # replicated on a cluster; "classic" on a single node is fine too
    "x-max-length": 1000000,  # then the oldest messages are dropped (x-overflow: drop-head)
    "x-expires": 7 * 24 * 3600 * 1000,  # the queue goes away after a week without a consumer
})
for key in BINDINGS:
    channel.queue_bind(QUEUE, EXCHANGE, key)
channel.basic_qos(prefetch_count=100)
channel.basic_consume(QUEUE, handle)
print(f"subscribed: queue {QUEUE} on exchange {EXCHANGE}", file=sys.stderr, flush=True)
channel.start_consuming()
connection.close()
