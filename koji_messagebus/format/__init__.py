"""The message format: an event's values, its AMQP 1.0 encoding and wire bytes, the size rule (pure, no I/O)."""
