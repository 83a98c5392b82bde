-- The notifier's log: one row per domain event (envelope) it has dealt with, so a
-- redelivered record is recognised and the fan gets one email per event. Only the
-- notifier writes here.
--
-- status:
--   sending  an attempt is or was under way: the row is committed before the SMTP
--            conversation, so a crash after the server accepted the message leaves
--            this trace (the next attempt sends again under the same Message-ID)
--   sent     the SMTP server accepted the message
--   skipped  the event needs no email (e.g. request.released)
--   dead     given up: a permanent refusal, or retries past the give-up time
CREATE SCHEMA notifier;

CREATE TABLE notifier.notifications (
    envelope_id uuid PRIMARY KEY,
    event_id    uuid NOT NULL,
    request_id  uuid,
    fan_id      uuid,
    kind        text NOT NULL,
    recipient   text,
    subject     text,
    -- <envelope_id@onsale>: receivers can de-duplicate a resend on it.
    message_id  text,
    status      text NOT NULL CHECK (status IN ('sending', 'sent', 'skipped', 'dead')),
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  text,
    occurred_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    CONSTRAINT sent_has_time CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);

-- Support asks "what did we tell this fan".
CREATE INDEX notifications_fan ON notifier.notifications (fan_id, created_at);
-- Operators list what is stuck or dead.
CREATE INDEX notifications_unfinished ON notifier.notifications (status, updated_at)
    WHERE status IN ('sending', 'dead');
