-- Accounts. Emails are stored lower-cased; the unique index makes a second
-- registration of the same address fail at the database, whatever races.
CREATE SCHEMA gateway;

CREATE TABLE gateway.users (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('fan', 'operator', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_lower CHECK (email = lower(email))
);

CREATE UNIQUE INDEX users_email_key ON gateway.users (email);
