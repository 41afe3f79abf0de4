-- A week of a busy trail is a million login records: reading them row by row takes seconds.
-- `audit_login_packs` keeps each closed hour's `audit_logins` rows as one packed value
-- (src/store/audit_packs.rs), so `policy what-if` and the console read a week in 168 values
-- and only the open hours row by row. A pack is a copy, never the record: any insert, update
-- or delete of a row in its hour deletes it (the triggers below), and it is rebuilt from the
-- rows when next needed. A pack is built under `LOCK TABLE audit_logins IN SHARE MODE`, so no
-- row can be written between reading an hour and storing its pack. `users forget` and
-- retention so leave no copy of what they delete. `reasons` keeps a record's reason labels
-- (`code` or `code: feature`, separated by chr(30)) for the console's top reasons.
ALTER TABLE audit_logins ADD COLUMN reasons TEXT;
UPDATE audit_logins SET reasons = labels.reasons
FROM (
    SELECT e.id,
           string_agg(left(r ->> 'code', 48)
                      || CASE WHEN coalesce(r ->> 'feature', '') <> ''
                              THEN ': ' || left(r ->> 'feature', 48) ELSE '' END,
                      chr(30) ORDER BY n) AS reasons
    FROM audit_events AS e,
         LATERAL jsonb_array_elements(
             CASE WHEN jsonb_typeof(e.detail::jsonb -> 'reasons') = 'array'
                  THEN e.detail::jsonb -> 'reasons' ELSE '[]'::jsonb END
         ) WITH ORDINALITY AS items (r, n)
    WHERE e.id IN (SELECT event_id FROM audit_logins)
      AND jsonb_typeof(r -> 'code') = 'string'
    GROUP BY e.id
) AS labels
WHERE audit_logins.event_id = labels.id;
CREATE TABLE audit_login_packs (
    hour    BIGINT PRIMARY KEY,  -- at / 3600000
    records BIGINT NOT NULL,
    pack    BYTEA NOT NULL
);
CREATE FUNCTION audit_login_packs_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM audit_login_packs WHERE hour = OLD.at / 3600000;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        DELETE FROM audit_login_packs WHERE hour = NEW.at / 3600000;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_login_packs_stale AFTER INSERT OR UPDATE OR DELETE ON audit_logins
    FOR EACH ROW EXECUTE FUNCTION audit_login_packs_stale();
