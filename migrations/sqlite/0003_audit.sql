-- The audit trail of login decisions (src/audit). Each record carries the incident reference
-- shown on block pages, for `gaitkeeper audit show`, and its own random id: a record delivered
-- twice (from the spool after a crash) is stored once.
ALTER TABLE audit_events ADD COLUMN incident TEXT;
ALTER TABLE audit_events ADD COLUMN record_id TEXT;
CREATE UNIQUE INDEX audit_events_by_record ON audit_events (record_id);
CREATE INDEX audit_events_by_incident ON audit_events (incident, id);
