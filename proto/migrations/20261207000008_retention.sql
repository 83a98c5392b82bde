-- What the payments purge reads: published outbox records and applied webhook ids
-- by age (see payments::retention).
CREATE INDEX messages_published ON outbox.messages (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX webhooks_received ON payments.webhooks (received_at);
