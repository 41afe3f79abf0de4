-- The same table as on PostgreSQL, so both schemas keep one numbering; a SQLite store serves a
-- single instance, which keeps this state in memory, so it stays empty.
CREATE TABLE IF NOT EXISTS shared_once (
    kind TEXT NOT NULL,
    id BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS shared_once_expiry ON shared_once (expires_at);
CREATE TABLE IF NOT EXISTS shared_counters (
    slot TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_counters_expiry ON shared_counters (expires_at);
CREATE TABLE IF NOT EXISTS shared_bans (
    slot TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_bans_expiry ON shared_bans (expires_at);
