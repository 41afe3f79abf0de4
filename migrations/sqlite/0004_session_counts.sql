-- How many login sessions each user has, kept by the batched recording so that it trims a
-- user's history only when it is past its bound (instead of probing every user every batch).
ALTER TABLE users ADD COLUMN sessions INTEGER NOT NULL DEFAULT 0;
UPDATE users SET sessions = (SELECT COUNT(*) FROM login_sessions s WHERE s.user_key = users.user_key);
