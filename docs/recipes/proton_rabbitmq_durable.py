"""A durable subscription on RabbitMQ 3.x or 4.x, received over AMQP 1.0 (proton).

RabbitMQ's AMQP 1.0 side cannot declare a named queue on 3.x, so the queue is declared and bound
once over AMQP 0-9-1 (pika; on 4.x the /management node does the same without pika, see the
rhea recipe) and then read over AMQP 1.0: `/amq/queue/NAME` on 3.x, `/queues/NAME` on 4.x.
Decoded with koji_messagebus.consumer (proton's own decoder keeps only 65,535 values).
"""

import os
import sys

import pika
from proton import Delivery
from proton.handlers import MessagingHandler
from proton.reactor import Container

from koji_messagebus.consumer import Seen, from_delivery

HOST = os.environ.get("KOJI_BUS_HOST", "127.0.0.1")
PORT = int(os.environ.get("KOJI_BUS_PORT", "5672"))
USER = os.environ.get("KOJI_BUS_USER", "guest")
PASSWORD = os.environ.get("KOJI_BUS_PASSWORD", "guest")
EXCHANGE = os.environ.get("KOJI_BUS_EXCHANGE", "koji.events")
QUEUE = os.environ.get("KOJI_BUS_QUEUE", "tag-watcher")
BINDINGS = ["koji.event.Tag.f44-updates-candidate.*.*"]
# RabbitMQ 4.x: "/queues/{queue}"; 3.x: "/amq/queue/{queue}"
SOURCE = os.environ.get("KOJI_BUS_SOURCE", "/queues/{queue}").format(queue=QUEUE)
COUNT = int(os.environ.get("KOJI_BUS_COUNT", "0"))  # stop after this many messages (0: never)

admin = pika.BlockingConnection(pika.ConnectionParameters(
    HOST, PORT, credentials=pika.PlainCredentials(USER, PASSWORD)))
channel = admin.channel()
channel.queue_declare(QUEUE, durable=True, arguments={"x-max-length": 1000000,
                                                      "x-expires": 7 * 24 * 3600 * 1000})
for key in BINDINGS:
    channel.queue_bind(QUEUE, EXCHANGE, key)
admin.close()


class Consumer(MessagingHandler):
    def __init__(self):
        super().__init__(prefetch=100, auto_accept=False)
        self.seen = Seen()
        self.handled = 0

    def on_start(self, event):
        conn = event.container.connect(f"amqp://{HOST}:{PORT}", user=USER, password=PASSWORD,
                                       allowed_mechs="PLAIN", allow_insecure_mechs=True)
        event.container.create_receiver(conn, SOURCE)

    def on_link_opened(self, event):
        print(f"subscribed: {SOURCE}", file=sys.stderr, flush=True)

    def on_delivery(self, event):  # instead of on_message: the raw bytes, decoded without a limit
        msg = from_delivery(event.delivery)
        if msg is None:
            return  # more frames to come
        if self.seen.first(msg.id):
            print(msg.to_json(), flush=True)  # your code here
        event.delivery.update(Delivery.ACCEPTED)  # after handling: at-least-once
        event.delivery.settle()
        self.handled += 1
        if COUNT and self.handled >= COUNT:
            event.connection.close()


Container(Consumer()).run()
