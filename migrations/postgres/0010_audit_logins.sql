-- The audit trail's login records (login.decision, login.outcome, challenge.passed,
-- challenge.failed, challenge.expired) with what `gaitkeeper policy what-if` replays as plain
-- columns: a week of a busy trail is read from this narrow table by time instead of parsing
-- every record's JSON detail. Written with its audit event, in the same transaction; deleted
-- with it (`users forget`) by the cascade. `finding` is NULL for records written before
-- gaitkeeper kept it (what-if then infers it from `rule`); `floors` lists the rules with a
-- risk floor among the record's reasons, comma-separated.
CREATE TABLE audit_logins (
    event_id   BIGINT PRIMARY KEY REFERENCES audit_events (id) ON DELETE CASCADE,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    incident   TEXT,
    user_key   BYTEA,
    app        TEXT,
    route      TEXT,
    finding    TEXT,
    regulation TEXT,
    risk       DOUBLE PRECISION,
    model_risk DOUBLE PRECISION,
    floors     TEXT,
    factor     TEXT,
    unheld     BIGINT NOT NULL DEFAULT 0,
    decision   TEXT,
    rule       TEXT,
    mode       TEXT,
    outcome    TEXT,
    challenge  TEXT
);
CREATE INDEX audit_logins_by_time ON audit_logins (at);
-- The records already kept: without the fields older versions did not write.
INSERT INTO audit_logins (event_id, at, kind, incident, user_key, app, route, risk, decision,
                          rule, mode, outcome, challenge)
SELECT id, at, kind, incident, user_key,
       d ->> 'app', d ->> 'route',
       CASE WHEN jsonb_typeof(d -> 'risk') = 'number' THEN (d ->> 'risk')::double precision END,
       d ->> 'decision', d ->> 'policy', d ->> 'mode', d ->> 'outcome', d ->> 'challenge'
FROM (SELECT id, at, kind, incident, user_key, detail::jsonb AS d
      FROM audit_events
      WHERE kind IN ('login.decision', 'login.outcome', 'challenge.passed', 'challenge.failed',
                     'challenge.expired')) AS login_records;
