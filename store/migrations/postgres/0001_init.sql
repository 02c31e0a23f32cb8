-- Certificates, from the moment their to-be-signed bytes exist (status 'pending')
-- to the moment the signed certificate is stored (status 'issued').
CREATE TABLE certificates (
    serial      TEXT PRIMARY KEY,  -- upper-case hex, as OpenSSL prints it
    issuer      TEXT NOT NULL,     -- name of the issuing CA ('root', 'issuing')
    profile     TEXT NOT NULL,
    subject     TEXT NOT NULL,     -- RFC 4514 string, for people and logs
    pinfl       TEXT,
    not_before  BIGINT NOT NULL,  -- Unix seconds
    not_after   BIGINT NOT NULL,
    tbs         BYTEA NOT NULL,
    der         BYTEA,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'issued')),
    created_at  BIGINT NOT NULL,
    issued_at   BIGINT
);
CREATE INDEX certificates_pinfl ON certificates (pinfl);
CREATE INDEX certificates_pending ON certificates (status) WHERE status = 'pending';

-- Certification authorities of this installation (written by the key ceremony).
CREATE TABLE authorities (
    name        TEXT PRIMARY KEY,
    key_label   TEXT NOT NULL,
    key_spec    TEXT NOT NULL,
    der         BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

-- The audit chain: each entry's hash covers the previous entry's hash.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,  -- Unix microseconds
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object      TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);

-- One row: the chain's head. Updating it first serialises writers and lets
-- `audit verify` notice entries removed from the end.
CREATE TABLE audit_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
