-- A key's claim is committed at once and held by a lease, not by an open
-- transaction: the request runs in a task of its own, and its answer is stored even
-- when its client went away (gateway::idempotency).
ALTER TABLE gateway.idempotency_keys ADD COLUMN claimed_until timestamptz;
