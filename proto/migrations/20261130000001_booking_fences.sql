-- Fencing for the drainers. Each event's drainer holds a lease in Redis whose epoch
-- is raised here when it takes over; every ledger write of a drainer checks, in its
-- own transaction, that the epoch is still its own. A drainer that stalled past its
-- lease (a pause, a slow pool, SIGSTOP) therefore cannot write after its successor
-- took over: the successor's raise waits for the old drainer's open transactions,
-- and every later one finds the epoch moved.
CREATE TABLE booking.drain_fences (
    event_id uuid PRIMARY KEY REFERENCES inventory.events,
    epoch    bigint NOT NULL CHECK (epoch > 0),
    holder   text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
