-- Revocation state of each certificate: good, suspended (certificateHold) or
-- revoked (final). `revoked_at` and `revocation_reason` describe the current state.
ALTER TABLE certificates ADD COLUMN revocation TEXT NOT NULL DEFAULT 'good'
    CHECK (revocation IN ('good', 'suspended', 'revoked'));
ALTER TABLE certificates ADD COLUMN revoked_at BIGINT;
ALTER TABLE certificates ADD COLUMN revocation_reason BIGINT;
-- CRL generation pages through this in serial order; it covers the query,
-- so no table row is read.
CREATE INDEX certificates_not_good ON certificates (issuer, serial, status, not_after, revoked_at, revocation_reason)
    WHERE revocation <> 'good';

-- The change feed: every status change, in order. Responders and the CRL
-- updater follow `id`, whichever process made the change.
CREATE TABLE status_changes (
    id          BIGSERIAL PRIMARY KEY,
    serial      TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    revocation  TEXT NOT NULL,
    revoked_at  BIGINT,
    reason      BIGINT,
    at          BIGINT NOT NULL   -- Unix microseconds
);

-- CRLs as signed, newest number last; `number` counts per issuer across kinds.
CREATE TABLE crls (
    issuer      TEXT NOT NULL,
    kind        TEXT NOT NULL,     -- 'full' (later: 'delta', 'shard-N')
    number      BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    entries     BIGINT NOT NULL,
    der         BYTEA NOT NULL,
    PRIMARY KEY (issuer, number)
);
CREATE INDEX crls_latest ON crls (issuer, kind, number);
