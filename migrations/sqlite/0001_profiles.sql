-- gaitkeeper profile store, SQLite. Times are Unix milliseconds; user_key is the 32-byte
-- HMAC-SHA256 of the login name under a key derived from secrets.key.

-- One row per fact about the store itself (e.g. the check value of the key that keys users).
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE users (
    user_key        BLOB PRIMARY KEY CHECK (length(user_key) = 32),
    clear_name      TEXT,
    created_at      INTEGER NOT NULL,
    verified_logins INTEGER NOT NULL DEFAULT 0,
    last_login_at   INTEGER
);

CREATE TABLE login_sessions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_key        BLOB NOT NULL REFERENCES users (user_key) ON DELETE CASCADE,
    at              INTEGER NOT NULL,
    feature_version INTEGER NOT NULL,
    features        BLOB NOT NULL,
    risk            REAL NOT NULL,
    reasons         TEXT NOT NULL,
    decision        TEXT NOT NULL,
    outcome         TEXT NOT NULL
);
CREATE INDEX login_sessions_by_user ON login_sessions (user_key, id);
CREATE INDEX login_sessions_by_time ON login_sessions (at);

CREATE TABLE models (
    user_key        BLOB PRIMARY KEY REFERENCES users (user_key) ON DELETE CASCADE,
    feature_version INTEGER NOT NULL,
    model_version   INTEGER NOT NULL,
    model           BLOB NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Sealed with XChaCha20-Poly1305 under a key derived from secrets.key; the user key is the
-- associated data, so a sealed secret cannot be moved to another user.
CREATE TABLE totp_secrets (
    user_key   BLOB PRIMARY KEY REFERENCES users (user_key) ON DELETE CASCADE,
    nonce      BLOB NOT NULL,
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE audit_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    user_key BLOB,
    kind     TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX audit_events_by_user ON audit_events (user_key, id);
CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

-- What is left of forgotten users' audit rows: counts by kind, with nothing about who.
CREATE TABLE audit_forgotten (
    kind   TEXT PRIMARY KEY,
    events INTEGER NOT NULL
);
