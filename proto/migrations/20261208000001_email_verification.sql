-- Email confirmation (issue 24, "trust under attack"): with
-- ONSALE_AUTH__REQUIRE_VERIFIED_EMAIL on, an account joins a line only once it has
-- followed the link emailed to its address.
--
-- When the address was confirmed; NULL: not yet. Accounts that exist before this
-- migration count as confirmed (at their creation): turning the requirement on
-- after an upgrade locks nobody out who could buy before it. The bootstrap admin
-- is confirmed when it is made (the operator who set it vouches for the address).
ALTER TABLE gateway.users ADD COLUMN email_verified_at timestamptz;
UPDATE gateway.users SET email_verified_at = created_at;

-- Confirmation tokens: 256 random bits, stored as their SHA-256 (a copy of this
-- table confirms nothing), each good once and for 24 hours. A few per account at
-- most: the gateway makes at most 3 in any hour (sign-up's included), so a
-- stranger's inbox gets no more than that from one account.
CREATE TABLE gateway.email_verifications (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES gateway.users ON DELETE CASCADE,
    -- The address the link went to: the token confirms that address only.
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

CREATE INDEX email_verifications_of_user ON gateway.email_verifications (user_id, created_at);
