-- The seat ledger: the durable record of who holds or bought which seat.
-- At most one live claim per seat and event is the primary key's promise, so no
-- seat is ever held or sold to two parties, whatever Redis says. A released or
-- expired hold deletes its claim.
CREATE SCHEMA booking;

CREATE TABLE booking.seat_claims (
    event_id   uuid NOT NULL REFERENCES inventory.events,
    seat_id    text NOT NULL,
    request_id uuid NOT NULL,
    state      text NOT NULL CHECK (state IN ('held', 'sold')),
    expires_at timestamptz,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, seat_id),
    CONSTRAINT held_claims_expire CHECK ((state = 'held') = (expires_at IS NOT NULL))
);

CREATE INDEX seat_claims_request ON booking.seat_claims (request_id);
