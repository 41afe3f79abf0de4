-- The same table as on PostgreSQL, so both schemas keep one numbering; a SQLite store serves a
-- single instance, which keeps its held logins in memory, so it stays empty.
CREATE TABLE IF NOT EXISTS shared_held (
    held_key BLOB PRIMARY KEY,
    released BOOLEAN NOT NULL,
    sealed BLOB NOT NULL,
    weight INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    shown_inline INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_held_expiry ON shared_held (expires_ms);
