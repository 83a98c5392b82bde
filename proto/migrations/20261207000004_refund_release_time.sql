-- When a refund's seats went back on sale in Redis: the moment they could be held
-- again (a Redis outage can put it well after the refund's approval).
ALTER TABLE payments.refunds ADD COLUMN seats_released_at timestamptz;
UPDATE payments.refunds SET seats_released_at = updated_at WHERE seats_released;
