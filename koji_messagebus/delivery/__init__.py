"""After the hub's COMMIT: the process's sender thread, the hand-off and wait, the outbox drainer and step, status."""
