-- Revocation state of each certificate: good, suspended (certificateHold) or
-- revoked (final). `revoked_at` and `revocation_reason` describe the current state.
ALTER TABLE certificates ADD COLUMN revocation TEXT NOT NULL DEFAULT 'good'
    CHECK (revocation IN ('good', 'suspended', 'revoked'));
ALTER TABLE certificates ADD COLUMN revoked_at INTEGER;
ALTER TABLE certificates ADD COLUMN revocation_reason INTEGER;
-- CRL generation pages through this in serial order; it covers the query,
-- so no table row is read.
CREATE INDEX certificates_not_good ON certificates (issuer, serial, status, not_after, revoked_at, revocation_reason)
    WHERE revocation <> 'good';

-- The change feed: every status change, in order. Responders and the CRL
-- updater follow `id`, whichever process made the change.
CREATE TABLE status_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    serial      TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    revocation  TEXT NOT NULL,
    revoked_at  INTEGER,
    reason      INTEGER,
    at          INTEGER NOT NULL   -- Unix microseconds
);

-- CRLs as signed, newest number last; `number` counts per issuer across kinds.
CREATE TABLE crls (
    issuer      TEXT NOT NULL,
    kind        TEXT NOT NULL,     -- 'full' (later: 'delta', 'shard-N')
    number      INTEGER NOT NULL,
    this_update INTEGER NOT NULL,
    next_update INTEGER NOT NULL,
    entries     INTEGER NOT NULL,
    der         BLOB NOT NULL,
    PRIMARY KEY (issuer, number)
);
CREATE INDEX crls_latest ON crls (issuer, kind, number);
