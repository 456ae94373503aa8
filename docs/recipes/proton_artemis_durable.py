"""A durable subscription on ActiveMQ Artemis (proton).

Artemis has no exchanges: the plugin sends each message to the multicast address named by its
routing key, and a subscriber names the Artemis wildcard address (`.` separates words, `*` one
word, `#` any number).  A receiver with capability `topic`, a durable terminus that never expires
and a fixed container id and link name is a durable subscription: Artemis keeps a queue
(CONTAINER.LINK) on the address that collects messages while the consumer is away.  Closing the
link (not just the connection) deletes it.  Decoded with koji_messagebus.consumer.
"""

import os
import sys

from proton import Delivery, symbol
from proton.handlers import MessagingHandler
from proton.reactor import Container, DurableSubscription, LinkOption

from koji_messagebus.consumer import Seen, from_delivery

HOST = os.environ.get("KOJI_BUS_HOST", "127.0.0.1")
PORT = int(os.environ.get("KOJI_BUS_PORT", "5672"))
USER = os.environ.get("KOJI_BUS_USER", "admin")
PASSWORD = os.environ.get("KOJI_BUS_PASSWORD", "admin")
SUBSCRIPTION = os.environ.get("KOJI_BUS_QUEUE", "tag-watcher")  # container id and link name
ADDRESS = "koji.event.Tag.f44-updates-candidate.#"  # an Artemis wildcard address
COUNT = int(os.environ.get("KOJI_BUS_COUNT", "0"))  # stop after this many messages (0: never)


class Multicast(LinkOption):
    """A topic subscription: every subscriber gets every message (not a share of a queue)."""

    def apply(self, link):
        link.source.capabilities.put_object(symbol("topic"))


class Consumer(MessagingHandler):
    def __init__(self):
        super().__init__(prefetch=100, auto_accept=False)
        self.seen = Seen()
        self.handled = 0

    def on_start(self, event):
        conn = event.container.connect(f"amqp://{HOST}:{PORT}", user=USER, password=PASSWORD,
                                       allowed_mechs="PLAIN", allow_insecure_mechs=True)
        event.container.create_receiver(conn, ADDRESS, name=SUBSCRIPTION,
                                        options=[Multicast(), DurableSubscription()])

    def on_link_opened(self, event):
        print(f"subscribed: {SUBSCRIPTION} on {ADDRESS}", file=sys.stderr, flush=True)

    def on_delivery(self, event):
        msg = from_delivery(event.delivery)
        if msg is None:
            return
        if self.seen.first(msg.id):
            print(msg.to_json(), flush=True)  # your code here
        event.delivery.update(Delivery.ACCEPTED)
        event.delivery.settle()
        self.handled += 1
        if COUNT and self.handled >= COUNT:
            event.connection.close()  # the connection, not the link: the subscription stays


container = Container(Consumer())
container.container_id = SUBSCRIPTION  # with the link name, what identifies the subscription
container.run()
