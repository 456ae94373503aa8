"""koji-messagebus: a Koji hub plugin that publishes hub events to an AMQP 1.0 message bus."""

__version__ = "1.0.0"
