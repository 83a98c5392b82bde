-- Payments: orders, the tickets they bought, the sandbox provider's own record of
-- charges, webhook deliveries seen, and the transactional outbox.

CREATE SCHEMA payments;

-- One order per payment attempt on a request. A request has at most one order in
-- flight (pending) and at most one paid order: both are the indexes' promises.
CREATE TABLE payments.orders (
    order_id      uuid PRIMARY KEY,
    request_id    uuid NOT NULL,
    event_id      uuid NOT NULL REFERENCES inventory.events,
    fan_id        uuid NOT NULL,
    state         text NOT NULL CHECK (state IN ('pending', 'paid', 'declined', 'refunded', 'cancelled')),
    seats         text[] NOT NULL,
    amount_cents  bigint NOT NULL CHECK (amount_cents >= 0),
    currency      text NOT NULL,
    -- The only part of a card onsale keeps.
    card_last4    text NOT NULL CHECK (card_last4 ~ '^[0-9]{4}$'),
    provider      text NOT NULL,
    charge_id     text,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_fan ON payments.orders (fan_id, created_at DESC);
CREATE UNIQUE INDEX orders_one_pending ON payments.orders (request_id) WHERE state = 'pending';
CREATE UNIQUE INDEX orders_one_paid ON payments.orders (request_id) WHERE state = 'paid';

-- Sold seats. The primary key is the last word on overselling: one ticket per seat
-- and event, whatever Redis or a bug says.
CREATE TABLE payments.tickets (
    event_id   uuid NOT NULL REFERENCES inventory.events,
    seat_id    text NOT NULL,
    order_id   uuid NOT NULL REFERENCES payments.orders,
    request_id uuid NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, seat_id)
);

-- Webhook deliveries already acted on, by the provider's webhook id.
CREATE TABLE payments.webhooks (
    webhook_id  text PRIMARY KEY,
    order_id    uuid NOT NULL,
    kind        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- The sandbox provider's ledger of charges: what a real provider keeps on its side,
-- so that a lost answer (a crash after the charge) can be looked up afterwards.
CREATE TABLE payments.sandbox_charges (
    charge_id    text PRIMARY KEY,
    order_id     uuid NOT NULL UNIQUE,
    amount_cents bigint NOT NULL,
    -- voided: the merchant called the payment off before it succeeded (a checkout
    -- that never charged, a pending payment abandoned); a later charge is declined.
    state        text NOT NULL CHECK (state IN ('succeeded', 'declined', 'pending', 'failed', 'refunded', 'voided')),
    -- A pending charge's outcome and when the sandbox tells it by webhook.
    settles_to   text CHECK (settles_to IN ('succeeded', 'failed')),
    notify_at    timestamptz,
    notified_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sandbox_charges_due ON payments.sandbox_charges (notify_at) WHERE notified_at IS NULL;

-- The transactional outbox: every domain event is written here in the same
-- transaction as the change it reports (by whichever service makes the change), and
-- the payments relay publishes it to Kafka in `seq` order, then marks it published.
CREATE SCHEMA outbox;

CREATE TABLE outbox.messages (
    id           uuid PRIMARY KEY,
    seq          bigserial NOT NULL UNIQUE,
    topic        text NOT NULL,
    kind         text NOT NULL,
    event_id     uuid NOT NULL,
    request_id   uuid,
    payload      jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz
);

CREATE INDEX messages_unpublished ON outbox.messages (seq) WHERE published_at IS NULL;
