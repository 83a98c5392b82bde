-- Sales: one per event, with the lottery that orders the pre-queue.
CREATE SCHEMA waiting_room;

CREATE TABLE waiting_room.sales (
    event_id             uuid PRIMARY KEY REFERENCES inventory.events,
    state                text NOT NULL DEFAULT 'scheduled'
                         CHECK (state IN ('scheduled', 'drawing', 'open', 'paused', 'closed', 'sold_out')),
    -- The lottery seed stays secret until the draw; its SHA-256 is public from the start.
    seed                 bytea NOT NULL,
    commitment           text NOT NULL,
    drawn_at             timestamptz,
    cohort_size          integer,
    admission_per_second integer NOT NULL CHECK (admission_per_second > 0),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The drawn order of the pre-queue cohort, published with the seed.
CREATE TABLE waiting_room.draw_entries (
    event_id     uuid NOT NULL REFERENCES waiting_room.sales,
    request_id   uuid NOT NULL,
    queue_number integer NOT NULL,
    PRIMARY KEY (event_id, queue_number),
    UNIQUE (event_id, request_id)
);

-- Who pulled which lever.
CREATE TABLE waiting_room.audit (
    audit_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL REFERENCES waiting_room.sales,
    actor    uuid,
    action   text NOT NULL,
    detail   jsonb NOT NULL DEFAULT '{}',
    at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_event ON waiting_room.audit (event_id, at);
