-- Certificates, from the moment their to-be-signed bytes exist (status 'pending')
-- to the moment the signed certificate is stored (status 'issued').
CREATE TABLE certificates (
    serial      TEXT PRIMARY KEY,  -- upper-case hex, as OpenSSL prints it
    issuer      TEXT NOT NULL,     -- name of the issuing CA ('root', 'issuing')
    profile     TEXT NOT NULL,
    subject     TEXT NOT NULL,     -- RFC 4514 string, for people and logs
    pinfl       TEXT,
    not_before  INTEGER NOT NULL,  -- Unix seconds
    not_after   INTEGER NOT NULL,
    tbs         BLOB NOT NULL,
    der         BLOB,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'issued')),
    created_at  INTEGER NOT NULL,
    issued_at   INTEGER
);
CREATE INDEX certificates_pinfl ON certificates (pinfl);
CREATE INDEX certificates_pending ON certificates (status) WHERE status = 'pending';

-- Certification authorities of this installation (written by the key ceremony).
CREATE TABLE authorities (
    name        TEXT PRIMARY KEY,
    key_label   TEXT NOT NULL,
    key_spec    TEXT NOT NULL,
    der         BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- The audit chain: each entry's hash covers the previous entry's hash.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,  -- Unix microseconds
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object      TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);

-- One row: the chain's head. Updating it first serialises writers and lets
-- `audit verify` notice entries removed from the end.
CREATE TABLE audit_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL,
    hash        BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
