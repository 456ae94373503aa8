-- koji-messagebus outbox: messages committed with the hub's transaction, sent after commit.
-- Idempotent: psql -f messagebus-schema.sql koji
CREATE TABLE IF NOT EXISTS messagebus_outbox (
    id BIGSERIAL PRIMARY KEY,
    msg_id TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    stored TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    msg_type TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    payload BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS messagebus_outbox_stored ON messagebus_outbox (stored);
