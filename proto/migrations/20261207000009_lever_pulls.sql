-- An operator's lever (pause, resume, close) or admission change, recorded before it
-- is applied to Redis, then applied and audited exactly once (waiting_room::levers):
-- a failure half-way leaves a pending pull that the next pull of the event, or the
-- waiting room's scheduler, finishes.
CREATE TABLE waiting_room.lever_pulls (
    pull_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid NOT NULL REFERENCES waiting_room.sales,
    action       text NOT NULL CHECK (action IN ('pause', 'resume', 'close', 'admission')),
    actor        uuid NOT NULL,
    per_second   integer CHECK ((action = 'admission') = (per_second IS NOT NULL)),
    -- The sale's state in Redis when the pull was recorded (a close of a scheduled
    -- sale also ends its pre-queue).
    from_state   text,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'refused')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz
);

CREATE INDEX lever_pulls_pending ON waiting_room.lever_pulls (event_id, pull_id) WHERE state = 'pending';
