-- Every change of an account's role: who, from what to what, by whom, when.
CREATE TABLE gateway.role_changes (
    change_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES gateway.users,
    from_role  text NOT NULL,
    to_role    text NOT NULL,
    changed_by uuid NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX role_changes_of_user ON gateway.role_changes (user_id, changed_at);
