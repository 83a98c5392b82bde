-- Sessions: a sign-in and its refreshes. The access tokens a session is given
-- carry its id (`sid`); its refresh tokens are stored hashed, each spent by one
-- use. A spent token used again ends the session (it may have been stolen).
CREATE TABLE gateway.sessions (
    session_id   uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES gateway.users,
    created_at   timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz,
    -- After this, the session cannot be refreshed: sign in again.
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    ended_why    text CHECK (ended_why IN ('signed_out', 'signed_out_everywhere', 'refresh_token_reused')),
    CONSTRAINT sessions_end_has_a_reason CHECK ((ended_at IS NULL) = (ended_why IS NULL))
);

CREATE INDEX sessions_live_of_user ON gateway.sessions (user_id) WHERE ended_at IS NULL;

CREATE TABLE gateway.refresh_tokens (
    -- SHA-256 of the token: a copy of this table signs nobody in.
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES gateway.sessions ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    spent_at   timestamptz
);

CREATE INDEX refresh_tokens_of_session ON gateway.refresh_tokens (session_id);

-- Raised by a role change and by ending every session: tokens carry the version
-- they were issued at (`ver`), and older ones are refused.
ALTER TABLE gateway.users ADD COLUMN token_version bigint NOT NULL DEFAULT 0;
