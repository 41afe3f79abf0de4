-- Passkeys (WebAuthn credentials): a user's public keys, each bound to the relying party id
-- (a host name) it was registered for. No secret: the private key never leaves the
-- authenticator. The credential is kept as webauthn-rs serialises it (its public key and
-- signature counter), updated when its counter moves.
CREATE TABLE IF NOT EXISTS passkeys (
    user_key BYTEA NOT NULL,
    credential_id BYTEA NOT NULL,
    rp_id TEXT NOT NULL,
    credential TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    PRIMARY KEY (user_key, credential_id)
);
-- When each user was last offered to add a factor after a trusted login, so the offer is
-- shown at most every mfa.enrolment.reoffer_after.
CREATE TABLE IF NOT EXISTS factor_offers (
    user_key BYTEA PRIMARY KEY,
    offered_at BIGINT NOT NULL
);
