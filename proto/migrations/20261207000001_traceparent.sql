-- The W3C trace context (`traceparent`) carried with a change, so that one join, its
-- hold, its payment and its emails are one trace (see platform::telemetry). Empty
-- when no exporter runs, and for rows written before these columns.
ALTER TABLE booking.requests ADD COLUMN traceparent text;
ALTER TABLE payments.orders ADD COLUMN traceparent text;
ALTER TABLE outbox.messages ADD COLUMN traceparent text;
