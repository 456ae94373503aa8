"""A durable subscription on Qpid Broker-J (proton).

The plugin sends to the exchange with the routing key as subject.  A receiver on the exchange
with a legacy binding filter per key, a durable terminus that never expires and a fixed
container id and link name is a durable subscription: Broker-J keeps its queue, bound with the
keys, while the consumer is away.  Closing the link (not just the connection) deletes it.
Decoded with koji_messagebus.consumer.
"""

import os
import sys

from proton import Delivery, Described, symbol
from proton.handlers import MessagingHandler
from proton.reactor import Container, DurableSubscription, Filter

from koji_messagebus.consumer import Seen, from_delivery

HOST = os.environ.get("KOJI_BUS_HOST", "127.0.0.1")
PORT = int(os.environ.get("KOJI_BUS_PORT", "5672"))
USER = os.environ.get("KOJI_BUS_USER", "guest")
PASSWORD = os.environ.get("KOJI_BUS_PASSWORD", "guest")
EXCHANGE = os.environ.get("KOJI_BUS_EXCHANGE", "koji.events")
SUBSCRIPTION = os.environ.get("KOJI_BUS_QUEUE", "tag-watcher")  # container id and link name
BINDING = "koji.event.Tag.f44-updates-candidate.*.*"  # one link per binding key
TOPIC_BINDING = symbol("apache.org:legacy-amqp-topic-binding:string")
COUNT = int(os.environ.get("KOJI_BUS_COUNT", "0"))  # stop after this many messages (0: never)


class Consumer(MessagingHandler):
    def __init__(self):
        super().__init__(prefetch=100, auto_accept=False)
        self.seen = Seen()
        self.handled = 0

    def on_start(self, event):
        conn = event.container.connect(f"amqp://{HOST}:{PORT}", user=USER, password=PASSWORD,
                                       allowed_mechs="PLAIN", allow_insecure_mechs=True)
        binding = Filter({symbol("binding"): Described(TOPIC_BINDING, BINDING)})
        event.container.create_receiver(conn, EXCHANGE, name=SUBSCRIPTION,
                                        options=[binding, DurableSubscription()])

    def on_link_opened(self, event):
        print(f"subscribed: {SUBSCRIPTION} on {EXCHANGE} ({BINDING})", file=sys.stderr, flush=True)

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
