-- The gateway's x-request-id of the call that caused a domain event (see
-- proto::correlation), carried to the Kafka envelope and the email. Empty for events
-- no call caused (a hold running out) and for rows written before this column.
ALTER TABLE outbox.messages ADD COLUMN correlation_id text;
