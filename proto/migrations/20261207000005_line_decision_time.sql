-- When the line decided a request: the clock the booking worker gave its hold
-- script, as opposed to `decided_at`, when the ledger got the write (after a
-- Postgres outage, seconds later). Comparisons with other moments of the sale (a
-- refund's seats coming back) use this one. Null for rows written before it existed
-- and for rows no script decided (a close's rejections, seeded holds).
ALTER TABLE booking.requests ADD COLUMN line_decided_at timestamptz;
