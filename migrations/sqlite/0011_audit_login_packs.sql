-- A week of a busy trail is a million login records: reading them row by row takes seconds.
-- `audit_login_packs` keeps each closed hour's `audit_logins` rows as one packed value
-- (src/store/audit_packs.rs), so `policy what-if` and the console read a week in 168 values
-- and only the open hours row by row. A pack is a copy, never the record: any insert, update
-- or delete of a row in its hour deletes it (the triggers below), and it is rebuilt from the
-- rows when next needed. `users forget` and retention so leave no copy of what they delete.
-- `reasons` keeps a record's reason labels (`code` or `code: feature`, separated by char(30))
-- for the console's top reasons.
ALTER TABLE audit_logins ADD COLUMN reasons TEXT;
UPDATE audit_logins SET reasons = (
    SELECT group_concat(substr(json_extract(r.value, '$.code'), 1, 48)
                        || CASE WHEN coalesce(json_extract(r.value, '$.feature'), '') <> ''
                                THEN ': ' || substr(json_extract(r.value, '$.feature'), 1, 48)
                                ELSE '' END, char(30))
    FROM json_each((
        SELECT CASE WHEN json_valid(e.detail) AND json_type(e.detail, '$.reasons') = 'array'
                    THEN json_extract(e.detail, '$.reasons') ELSE '[]' END
        FROM audit_events AS e WHERE e.id = audit_logins.event_id
    )) AS r
    WHERE r.type = 'object' AND json_type(r.value, '$.code') = 'text'
);
CREATE TABLE audit_login_packs (
    hour    INTEGER PRIMARY KEY,  -- at / 3600000
    records INTEGER NOT NULL,
    pack    BLOB NOT NULL
);
CREATE TRIGGER audit_login_packs_on_insert AFTER INSERT ON audit_logins BEGIN
    DELETE FROM audit_login_packs WHERE hour = NEW.at / 3600000;
END;
CREATE TRIGGER audit_login_packs_on_update AFTER UPDATE ON audit_logins BEGIN
    DELETE FROM audit_login_packs WHERE hour IN (OLD.at / 3600000, NEW.at / 3600000);
END;
CREATE TRIGGER audit_login_packs_on_delete AFTER DELETE ON audit_logins BEGIN
    DELETE FROM audit_login_packs WHERE hour = OLD.at / 3600000;
END;
