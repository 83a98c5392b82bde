-- Money back and paper: each event's refund policy and tax, refunds of paid orders,
-- cancelled events, and invoices and credit notes numbered without gaps.

-- The event's refund policy (both unset: fans cannot ask) and its tax, in basis
-- points of the price (1900 = 19 %), included in the prices or added to them.
ALTER TABLE inventory.events
    ADD COLUMN refund_until       timestamptz,
    ADD COLUMN refund_fee_percent smallint CHECK (refund_fee_percent BETWEEN 0 AND 100),
    ADD COLUMN tax_rate_bp        integer NOT NULL DEFAULT 0 CHECK (tax_rate_bp BETWEEN 0 AND 10000),
    ADD COLUMN tax_included       boolean NOT NULL DEFAULT true,
    ADD CONSTRAINT refund_policy_whole CHECK ((refund_until IS NULL) = (refund_fee_percent IS NULL));

-- Orders gain what a refund and an invoice need: each seat's price and tax (in the
-- seats' order), the policy snapshotted when the order is paid, the billing details,
-- and what was paid back so far, which can never pass what was captured.
ALTER TABLE payments.orders
    DROP CONSTRAINT orders_state_check,
    ADD CONSTRAINT orders_state_check CHECK (state IN ('pending', 'paid', 'partially_refunded',
                                                       'declined', 'refunded', 'cancelled')),
    ADD COLUMN seat_cents         bigint[],
    ADD COLUMN seat_tax_cents     bigint[],
    ADD COLUMN tax_rate_bp        integer NOT NULL DEFAULT 0,
    ADD COLUMN tax_included       boolean NOT NULL DEFAULT true,
    ADD COLUMN refund_until       timestamptz,
    ADD COLUMN refund_fee_percent smallint,
    ADD COLUMN billing            jsonb,
    ADD COLUMN refunded_cents     bigint NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0),
    ADD CONSTRAINT refunds_within_capture CHECK (refunded_cents <= amount_cents),
    ADD CONSTRAINT seat_prices_whole CHECK (
        seat_cents IS NULL OR (cardinality(seat_cents) = cardinality(seats)
                               AND cardinality(seat_tax_cents) = cardinality(seats)));

DROP INDEX payments.orders_one_paid;
CREATE UNIQUE INDEX orders_one_paid ON payments.orders (request_id)
    WHERE state IN ('paid', 'partially_refunded');
CREATE INDEX orders_of_event ON payments.orders (event_id, state);

-- A refunded ticket's seat is sold again: one valid ticket per seat is the promise.
DROP INDEX tickets.tickets_one_per_seat;
CREATE UNIQUE INDEX tickets_one_per_seat ON tickets.tickets (event_id, seat_id) WHERE state = 'valid';

-- A refund of some of an order's tickets. The seat part (tickets voided, seats
-- released in the ledger) is written with the row; `seats_released` records that
-- Redis has them back too; the money part moves `state`.
CREATE TABLE payments.refunds (
    refund_id      uuid PRIMARY KEY,
    order_id       uuid NOT NULL REFERENCES payments.orders,
    event_id       uuid NOT NULL REFERENCES inventory.events,
    fan_id         uuid NOT NULL,
    ticket_ids     uuid[] NOT NULL CHECK (cardinality(ticket_ids) > 0),
    seats          text[] NOT NULL,
    amount_cents   bigint NOT NULL CHECK (amount_cents >= 0),
    fee_cents      bigint NOT NULL CHECK (fee_cents >= 0),
    tax_cents      bigint NOT NULL CHECK (tax_cents >= 0),
    state          text NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    -- `requested` for a fan's own; an operator's reason otherwise.
    reason         text NOT NULL,
    requested_by   uuid NOT NULL,
    by_operator    boolean NOT NULL,
    charge_id      text,
    -- The provider call the money part is on. Each attempt has its own idempotency
    -- key, so an operator's retry of a failed refund reaches the provider again, and
    -- a late webhook about an earlier attempt settles nothing.
    provider_attempt integer NOT NULL DEFAULT 1 CHECK (provider_attempt >= 1),
    seats_released boolean NOT NULL DEFAULT false,
    attempts       integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    failure        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refunds_of_order ON payments.refunds (order_id);
CREATE INDEX refunds_due ON payments.refunds (next_attempt_at)
    WHERE state = 'pending' OR NOT seats_released;

-- The sandbox provider's record of refunds, by the merchant's refund id and attempt
-- (its idempotency key).
CREATE TABLE payments.sandbox_refunds (
    refund_id    uuid NOT NULL,
    attempt      integer NOT NULL DEFAULT 1,
    charge_id    text NOT NULL REFERENCES payments.sandbox_charges,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    state        text NOT NULL CHECK (state IN ('succeeded', 'failed')),
    notify_at    timestamptz,
    notified_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (refund_id, attempt)
);

CREATE INDEX sandbox_refunds_due ON payments.sandbox_refunds (notify_at) WHERE notified_at IS NULL;

-- Webhook deliveries may be about a refund rather than an order.
ALTER TABLE payments.webhooks ALTER COLUMN order_id DROP NOT NULL,
    ADD COLUMN refund_id uuid;

-- A cancelled event: the sale closed, every order refunded. The refunds are made by
-- the payments service's loop, which resumes where it stopped.
CREATE TABLE payments.cancellations (
    event_id     uuid PRIMARY KEY REFERENCES inventory.events,
    reason       text NOT NULL,
    cancelled_by uuid NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

-- Invoices (series INV) and credit notes (CRN), numbered per series and year without
-- gaps: the counter row is taken in the transaction that issues the document, so a
-- rolled-back issue gives its number back. A document is never edited: its content
-- is a snapshot; its PDF is rendered once from it and kept with its SHA-256.
CREATE SCHEMA billing;

CREATE TABLE billing.counters (
    series text NOT NULL,
    year   integer NOT NULL,
    last   bigint NOT NULL CHECK (last >= 1),
    PRIMARY KEY (series, year)
);

CREATE TABLE billing.documents (
    number      text PRIMARY KEY,
    series      text NOT NULL CHECK (series IN ('INV', 'CRN')),
    year        integer NOT NULL,
    n           bigint NOT NULL CHECK (n >= 1),
    order_id    uuid NOT NULL REFERENCES payments.orders,
    refund_id   uuid UNIQUE REFERENCES payments.refunds,
    refers_to   text REFERENCES billing.documents,
    issued_at   timestamptz NOT NULL,
    total_cents bigint NOT NULL,
    tax_cents   bigint NOT NULL,
    currency    text NOT NULL,
    content     jsonb NOT NULL,
    pdf         bytea,
    pdf_sha256  text,
    UNIQUE (series, year, n),
    CONSTRAINT number_spelled CHECK (number = series || '-' || year || '-' || n),
    CONSTRAINT credit_notes_refer CHECK ((series = 'CRN') = (refund_id IS NOT NULL AND refers_to IS NOT NULL)),
    CONSTRAINT pdf_whole CHECK ((pdf IS NULL) = (pdf_sha256 IS NULL))
);

CREATE UNIQUE INDEX documents_one_invoice ON billing.documents (order_id) WHERE series = 'INV';
CREATE INDEX documents_unrendered ON billing.documents (issued_at) WHERE pdf IS NULL;

CREATE FUNCTION billing.documents_are_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'billing document % is kept: it cannot be deleted', OLD.number;
    END IF;
    IF OLD.pdf IS NOT NULL OR NEW.pdf IS NULL
       OR (to_jsonb(NEW) - 'pdf' - 'pdf_sha256') IS DISTINCT FROM (to_jsonb(OLD) - 'pdf' - 'pdf_sha256') THEN
        RAISE EXCEPTION 'billing document % is kept: only its first PDF may be added', OLD.number;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER documents_are_kept BEFORE UPDATE OR DELETE ON billing.documents
    FOR EACH ROW EXECUTE FUNCTION billing.documents_are_kept();
