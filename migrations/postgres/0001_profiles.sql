-- gaitkeeper profile store, PostgreSQL. Times are Unix milliseconds; user_key is the 32-byte
-- HMAC-SHA256 of the login name under a key derived from secrets.key.

-- One row per fact about the store itself (e.g. the check value of the key that keys users).
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE users (
    user_key        BYTEA PRIMARY KEY CHECK (length(user_key) = 32),
    clear_name      TEXT,
    created_at      BIGINT NOT NULL,
    verified_logins BIGINT NOT NULL DEFAULT 0,
    last_login_at   BIGINT
);

CREATE TABLE login_sessions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_key        BYTEA NOT NULL REFERENCES users (user_key) ON DELETE CASCADE,
    at              BIGINT NOT NULL,
    feature_version BIGINT NOT NULL,
    features        BYTEA NOT NULL,
    risk            DOUBLE PRECISION NOT NULL,
    reasons         TEXT NOT NULL,
    decision        TEXT NOT NULL,
    outcome         TEXT NOT NULL
);
CREATE INDEX login_sessions_by_user ON login_sessions (user_key, id);
CREATE INDEX login_sessions_by_time ON login_sessions (at);

CREATE TABLE models (
    user_key        BYTEA PRIMARY KEY REFERENCES users (user_key) ON DELETE CASCADE,
    feature_version BIGINT NOT NULL,
    model_version   BIGINT NOT NULL,
    model           BYTEA NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Sealed with XChaCha20-Poly1305 under a key derived from secrets.key; the user key is the
-- associated data, so a sealed secret cannot be moved to another user.
CREATE TABLE totp_secrets (
    user_key   BYTEA PRIMARY KEY REFERENCES users (user_key) ON DELETE CASCADE,
    nonce      BYTEA NOT NULL,
    sealed     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       BIGINT NOT NULL,
    user_key BYTEA,
    kind     TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX audit_events_by_user ON audit_events (user_key, id);
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

-- What is left of forgotten users' audit rows: counts by kind, with nothing about who.
CREATE TABLE audit_forgotten (
    kind   TEXT PRIMARY KEY,
    events BIGINT NOT NULL
);
