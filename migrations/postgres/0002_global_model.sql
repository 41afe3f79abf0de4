-- The global model (population prior, Random Forest, fusion), trained from the store's own
-- verified logins and shared by every instance. Each training adds a row; instances load the
-- newest row of the feature and model versions they understand. Old rows are trimmed on save.
CREATE TABLE global_models (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feature_version BIGINT NOT NULL,
    model_version   BIGINT NOT NULL,
    model           BYTEA NOT NULL,
    users           BIGINT NOT NULL,
    logins          BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX global_models_by_version ON global_models (feature_version, model_version, id);
