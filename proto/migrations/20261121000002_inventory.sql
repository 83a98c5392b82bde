-- Venues, their seats, and events on them.
CREATE SCHEMA inventory;

CREATE TABLE inventory.venues (
    venue_id   uuid PRIMARY KEY,
    name       text NOT NULL,
    seat_count integer NOT NULL CHECK (seat_count > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inventory.sections (
    venue_id      uuid NOT NULL REFERENCES inventory.venues ON DELETE CASCADE,
    section_index integer NOT NULL,
    name          text NOT NULL,
    price_tier    text NOT NULL,
    PRIMARY KEY (venue_id, section_index),
    UNIQUE (venue_id, name)
);

CREATE TABLE inventory.rows (
    venue_id      uuid NOT NULL,
    section_index integer NOT NULL,
    row_index     integer NOT NULL,
    label         text NOT NULL,
    seats         integer NOT NULL CHECK (seats > 0),
    PRIMARY KEY (venue_id, section_index, row_index),
    UNIQUE (venue_id, section_index, label),
    FOREIGN KEY (venue_id, section_index) REFERENCES inventory.sections ON DELETE CASCADE
);

-- One row per seat: the seat map is read in (section_index, row_index, number)
-- order, which is also the order adjacency is judged in.
CREATE TABLE inventory.seats (
    venue_id      uuid NOT NULL REFERENCES inventory.venues ON DELETE CASCADE,
    seat_id       text NOT NULL,
    section_index integer NOT NULL,
    row_index     integer NOT NULL,
    number        integer NOT NULL CHECK (number > 0),
    PRIMARY KEY (venue_id, seat_id),
    UNIQUE (venue_id, section_index, row_index, number)
);

CREATE TABLE inventory.events (
    event_id             uuid PRIMARY KEY,
    venue_id             uuid NOT NULL REFERENCES inventory.venues,
    name                 text NOT NULL,
    starts_at            timestamptz NOT NULL,
    onsale_at            timestamptz NOT NULL,
    max_per_fan          integer NOT NULL CHECK (max_per_fan > 0),
    hold_seconds         integer NOT NULL CHECK (hold_seconds > 0),
    admission_per_second integer NOT NULL CHECK (admission_per_second > 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT onsale_before_start CHECK (onsale_at < starts_at)
);

CREATE INDEX events_venue ON inventory.events (venue_id);

CREATE TABLE inventory.event_prices (
    event_id   uuid NOT NULL REFERENCES inventory.events ON DELETE CASCADE,
    price_tier text NOT NULL,
    cents      bigint NOT NULL CHECK (cents >= 0),
    PRIMARY KEY (event_id, price_tier)
);
