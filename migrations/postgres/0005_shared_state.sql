-- State several gaitkeeper instances share (server.shared_state: store): ids used once, each
-- until its own expiry. UNLOGGED: not written to the WAL (churn is high, every row expires
-- within minutes), so a database crash empties it — accepted: a page token used just before
-- the crash could then be used once more, within its few minutes of life.
CREATE UNLOGGED TABLE IF NOT EXISTS shared_once (
    kind TEXT NOT NULL,
    id BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS shared_once_expiry ON shared_once (expires_at);

-- Failed-login counters per user and per client address (regulation), each in its own fixed
-- window, and the bans they led to. UNLOGGED for the same reason: a crash forgets recent
-- failures (an attacker gains at most one window's budget once).
CREATE UNLOGGED TABLE IF NOT EXISTS shared_counters (
    slot TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_counters_expiry ON shared_counters (expires_at);
CREATE UNLOGGED TABLE IF NOT EXISTS shared_bans (
    slot TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_bans_expiry ON shared_bans (expires_at);
