-- koji-messagebus outbox: messages committed with the hub's transaction, sent after commit.
-- Idempotent: psql -f messagebus-schema.sql koji
CREATE TABLE IF NOT EXISTS messagebus_outbox (
    id BIGSERIAL PRIMARY KEY,
    msg_id TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    stored TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    msg_type TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    payload BYTEA NOT NULL,
    owner_pid INTEGER DEFAULT pg_backend_pid()
);
CREATE INDEX IF NOT EXISTS messagebus_outbox_stored ON messagebus_outbox (stored);
-- the storing connection's backend: a row whose backend is gone (its hub process died) is sent at
-- once by another process; rows stored before this column existed keep NULL (the age rule)
ALTER TABLE messagebus_outbox ADD COLUMN IF NOT EXISTS owner_pid INTEGER;
ALTER TABLE messagebus_outbox ALTER COLUMN owner_pid SET DEFAULT pg_backend_pid();
-- [outbox] keep > 0: a sent row is marked sent (kept for `koji-messagebus replay`) instead of deleted,
-- and removed once older than keep; the partial index keeps the drain's look for unsent rows cheap
ALTER TABLE messagebus_outbox ADD COLUMN IF NOT EXISTS sent_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS messagebus_outbox_unsent ON messagebus_outbox (id) WHERE sent_at IS NULL;
