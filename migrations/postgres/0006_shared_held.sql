-- Held logins of open challenges, shared by every instance (server.shared_state: store), so a
-- challenge taken by one instance can be answered through another, and survives the restart
-- (or kill -9) of the instance that took it.
--
-- held_key is the SHA-256 of the challenge id (or of the resume proof once an in-page
-- challenge was passed): the id itself never reaches the database. `sealed` is the login
-- (its body holds the user's password) under XChaCha20-Poly1305 with a key derived from
-- secrets.key, bound to held_key: nothing of a held login is stored in clear, and a sealed
-- row copied under another key does not open.
--
-- UNLOGGED: rows live minutes (mfa.challenge_ttl) and are deleted when used, so they are not
-- written to the WAL, and therefore never reach replicas, WAL archives or base backups even
-- sealed. A database crash empties the table: users with an open challenge sign in again.
CREATE UNLOGGED TABLE IF NOT EXISTS shared_held (
    held_key BYTEA PRIMARY KEY,
    released BOOLEAN NOT NULL,
    sealed BYTEA NOT NULL,
    weight BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    shown_inline SMALLINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_held_expiry ON shared_held (expires_ms);
