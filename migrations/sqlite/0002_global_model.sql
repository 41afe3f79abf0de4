-- The global model (population prior, Random Forest, fusion), trained from the store's own
-- verified logins and shared by every instance. Each training adds a row; instances load the
-- newest row of the feature and model versions they understand. Old rows are trimmed on save.
CREATE TABLE global_models (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_version INTEGER NOT NULL,
    model_version   INTEGER NOT NULL,
    model           BLOB NOT NULL,
    users           INTEGER NOT NULL,
    logins          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX global_models_by_version ON global_models (feature_version, model_version, id);
