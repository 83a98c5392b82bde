-- Idempotency-Key for the admins' and operators' state-changing requests (venues,
-- events, sale levers, admission, rebuilds). One row per (user, key): the first
-- request's fingerprint and its answer, replayed to a retry with the same body.
--
-- A row is inserted when the first request starts, in a transaction held open until
-- its answer is stored in the same row: a concurrent duplicate waits on the unique
-- key for that answer instead of running a second time, and a request that fails or
-- dies leaves no row behind. Only successful answers are kept (a refused request
-- changed nothing). Rows older than 24 hours are forgotten: a key may then be used
-- again, and the gateway deletes them on an interval.
CREATE TABLE gateway.idempotency_keys (
    user_id      uuid NOT NULL,
    -- SHA-256 (hex) of the Idempotency-Key header, never the key itself.
    key_digest   text NOT NULL,
    -- The route as mounted, e.g. `POST /v1/ops/events/{event_id}/{action}`.
    route        text NOT NULL,
    -- SHA-256 (hex) of the method, path and body of the first request.
    fingerprint  text NOT NULL,
    -- The stored answer; null only inside the first request's transaction.
    status       smallint,
    content_type text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key_digest)
);

CREATE INDEX idempotency_keys_created ON gateway.idempotency_keys (created_at);
