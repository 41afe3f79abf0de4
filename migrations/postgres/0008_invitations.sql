-- Operator invitations to enrol a second factor (`gaitkeeper users invite`): single use, for
-- one user of one app, until expires_at. Only the SHA-256 of the link's random id is kept, so
-- the table does not hold what opens the enrolment page.
CREATE TABLE IF NOT EXISTS invitations (
    id_hash BYTEA PRIMARY KEY,
    user_key BYTEA NOT NULL,
    app TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS invitations_user ON invitations (user_key);
