-- The line's durable record: every request the waiting room accepted, written before
-- the fan is told it is in line. Redis holds the line for speed; after Redis loses
-- an event's keys, the requests no booking worker has decided yet are put back in
-- line from here, in queue-number order, so an accepted request is never lost.
CREATE TABLE waiting_room.requests (
    request_id   uuid PRIMARY KEY,
    event_id     uuid NOT NULL REFERENCES waiting_room.sales,
    fan_id       uuid NOT NULL,
    -- Null while the request waits in the pre-queue (the draw numbers it).
    queue_number integer,
    -- The ask as the fan sent it: {"seats": [...]} or {"quantity", "section", "price_tier"}.
    ask          jsonb NOT NULL,
    -- Set when the request ended before a booking worker decided it: "cancelled", or
    -- "rejected:<reason>". Decided requests are booking.requests' business.
    ended        text,
    joined_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX requests_line ON waiting_room.requests (event_id, queue_number);
