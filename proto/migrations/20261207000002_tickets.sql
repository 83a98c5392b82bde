-- Tickets and the door. A paid seat becomes a ticket with a version; its code (what
-- the QR holds) is signed with its event's key and verifies offline. A reissue bumps
-- the version and revokes the old code; the revocation list is versioned per event,
-- for offline scanners. Entries are the door's ledger: one row per admission, whose
-- primary key (ticket, entry number) admits a ticket once per entry whatever races;
-- scans record every answer by the device's scan id, so a retry is one scan.

CREATE SCHEMA tickets;

CREATE TABLE tickets.tickets (
    ticket_id   uuid PRIMARY KEY,
    event_id    uuid NOT NULL REFERENCES inventory.events,
    seat_id     text NOT NULL,
    order_id    uuid NOT NULL REFERENCES payments.orders,
    request_id  uuid NOT NULL,
    fan_id      uuid NOT NULL,
    version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    state       text NOT NULL DEFAULT 'valid' CHECK (state IN ('valid', 'void')),
    -- The code's validity window, fixed at issue so a code never changes.
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT valid_window CHECK (valid_from < valid_until)
);

-- The last word on overselling: one ticket per seat and event, whatever Redis or a
-- bug says (it was payments.tickets' primary key).
CREATE UNIQUE INDEX tickets_one_per_seat ON tickets.tickets (event_id, seat_id);
CREATE INDEX tickets_of_order ON tickets.tickets (order_id);

INSERT INTO tickets.tickets (ticket_id, event_id, seat_id, order_id, request_id, fan_id,
                             valid_from, valid_until, issued_at)
SELECT gen_random_uuid(), t.event_id, t.seat_id, t.order_id, t.request_id, o.fan_id,
       t.issued_at, greatest(e.starts_at, t.issued_at) + interval '1 day', t.issued_at
FROM payments.tickets t
JOIN payments.orders o USING (order_id)
JOIN inventory.events e ON e.event_id = t.event_id;

DROP TABLE payments.tickets;

-- Each event's Ed25519 signing keys; one active at a time, older ones still verify.
CREATE TABLE tickets.keys (
    kid        text PRIMARY KEY,
    event_id   uuid NOT NULL REFERENCES inventory.events,
    secret_key bytea NOT NULL CHECK (length(secret_key) = 32),
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);

CREATE UNIQUE INDEX keys_one_active ON tickets.keys (event_id) WHERE retired_at IS NULL;

-- Codes that no longer admit, numbered per event (taken under the event's lock, so
-- a scanner that asks for what is newer than N never misses a row committed late).
CREATE TABLE tickets.revocations (
    event_id     uuid NOT NULL REFERENCES inventory.events,
    list_version bigint NOT NULL CHECK (list_version >= 1),
    ticket_id    uuid NOT NULL REFERENCES tickets.tickets,
    version      integer NOT NULL,
    reason       text NOT NULL,
    revoked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, list_version),
    UNIQUE (ticket_id, version)
);

-- Door staff, per event.
CREATE TABLE tickets.staff (
    event_id   uuid NOT NULL REFERENCES inventory.events,
    user_id    uuid NOT NULL REFERENCES gateway.users,
    granted_by uuid NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, user_id)
);

-- Admissions: the primary key admits a ticket once per entry (a re-entry after an
-- exit is the next number), whatever two scanners or a lost Redis say.
CREATE TABLE tickets.entries (
    ticket_id      uuid NOT NULL REFERENCES tickets.tickets,
    entry_no       integer NOT NULL CHECK (entry_no >= 1),
    event_id       uuid NOT NULL,
    scan_id        uuid NOT NULL UNIQUE,
    device_id      text NOT NULL,
    admitted_at    timestamptz NOT NULL,
    exit_scan_id   uuid UNIQUE,
    exit_device_id text,
    exited_at      timestamptz,
    PRIMARY KEY (ticket_id, entry_no)
);

CREATE INDEX entries_inside ON tickets.entries (event_id) WHERE exited_at IS NULL;

-- Every scan's answer, by the device's id for it.
CREATE TABLE tickets.scans (
    scan_id     uuid PRIMARY KEY,
    event_id    uuid NOT NULL,
    ticket_id   uuid,
    direction   text NOT NULL CHECK (direction IN ('entry', 'exit')),
    result      text NOT NULL,
    device_id   text NOT NULL,
    scanned_at  timestamptz NOT NULL,
    offline     boolean NOT NULL,
    staff_id    uuid NOT NULL,
    -- An offline scan that admitted a ticket the server found already in, or void.
    conflict    text CHECK (conflict IN ('double_entry', 'void')),
    answer      jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX scans_conflicts ON tickets.scans (event_id, recorded_at DESC) WHERE conflict IS NOT NULL;
