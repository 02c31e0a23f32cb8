-- Relying parties (state bodies, banks) that log citizens in by certificate
-- and verify signatures. The secret is 32 random bytes: its SHA-256 is
-- enough to check it (nothing to brute-force), and the database never
-- holds the secret itself.
CREATE TABLE relying_parties (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    class        TEXT NOT NULL CHECK (class IN ('state', 'commercial')),
    secret_hash  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    disabled_at  BIGINT
);

-- Login challenges. A row is consumed once (used_at set by a conditional
-- UPDATE, so two logins racing with one challenge cannot both win); used
-- rows stay as the record logins are metered and billed from. A TLS login
-- has no challenge to sign and is recorded as a row born used (kind 'tls').
CREATE TABLE auth_challenges (
    challenge    TEXT PRIMARY KEY,
    rp           TEXT NOT NULL REFERENCES relying_parties (id),
    kind         TEXT NOT NULL CHECK (kind IN ('cms', 'tls')),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT,
    serial       TEXT
);
CREATE INDEX auth_challenges_used ON auth_challenges (used_at);

-- Signature verifications per relying party and month (YYYY-MM).
CREATE TABLE rp_usage (
    rp       TEXT NOT NULL REFERENCES relying_parties (id),
    month    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    count    BIGINT NOT NULL,
    PRIMARY KEY (rp, month, kind)
);
