-- Recovery codes: single-use second factors for a user who lost their authenticator, issued
-- ten at a time and shown once. Only an HMAC of each code is kept (keyed from secrets.key, so
-- a copy of the database does not let anyone test guesses offline). Using one deletes it.
CREATE TABLE IF NOT EXISTS recovery_codes (
    user_key BYTEA NOT NULL,
    code_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_key, code_hash)
);
