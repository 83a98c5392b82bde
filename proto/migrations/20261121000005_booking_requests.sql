-- Every booking request's outcome as the workers decided it. Written in batches by
-- the booking workers (upserts keyed by request id, so a redelivered entry writes
-- the same row again).
CREATE TABLE booking.requests (
    request_id      uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES inventory.events,
    fan_id          uuid NOT NULL,
    queue_number    integer,
    state           text NOT NULL
                    CHECK (state IN ('queued', 'held', 'paying', 'confirmed', 'expired', 'released', 'cancelled', 'rejected')),
    seats           text[] NOT NULL DEFAULT '{}',
    hold_expires_at timestamptz,
    reason          text,
    decided_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX requests_event_number ON booking.requests (event_id, queue_number);
