"""Inside the hub's transaction: which sub-calls the hub kept, and the outbox store."""
