-- The audit trail's login records (login.decision, login.outcome, challenge.passed,
-- challenge.failed, challenge.expired) with what `gaitkeeper policy what-if` replays as plain
-- columns: a week of a busy trail is read from this narrow table by time instead of parsing
-- every record's JSON detail. Written with its audit event, in the same transaction; deleted
-- with it (`users forget`) by the cascade. `finding` is NULL for records written before
-- gaitkeeper kept it (what-if then infers it from `rule`); `floors` lists the rules with a
-- risk floor among the record's reasons, comma-separated.
CREATE TABLE audit_logins (
    event_id   INTEGER PRIMARY KEY REFERENCES audit_events (id) ON DELETE CASCADE,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    incident   TEXT,
    user_key   BLOB,
    app        TEXT,
    route      TEXT,
    finding    TEXT,
    regulation TEXT,
    risk       REAL,
    model_risk REAL,
    floors     TEXT,
    factor     TEXT,
    unheld     INTEGER NOT NULL DEFAULT 0,
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
       json_extract(detail, '$.app'), json_extract(detail, '$.route'),
       json_extract(detail, '$.risk'), json_extract(detail, '$.decision'),
       json_extract(detail, '$.policy'), json_extract(detail, '$.mode'),
       json_extract(detail, '$.outcome'), json_extract(detail, '$.challenge')
FROM audit_events
WHERE kind IN ('login.decision', 'login.outcome', 'challenge.passed', 'challenge.failed',
               'challenge.expired')
  AND json_valid(detail);
