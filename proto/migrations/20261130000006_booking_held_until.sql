-- A paying request's normal hold end, kept while its payment is in flight (its
-- hold_expires_at is then the paying deadline): a declined payment goes back to it,
-- and a restore from the ledger puts it back into Redis.
ALTER TABLE booking.requests ADD COLUMN held_until timestamptz;
