-- Storing a signed certificate changes no indexed column, so on PostgreSQL it
-- is a HOT update: the new row version goes on the same page and no index gets
-- a new entry (before, each certificate was indexed twice, and vacuum had to
-- clean the indexes after every issuance). For that:
-- * pending certificates are found through their own small table, written
--   with the intent and emptied with the certificate, not by an index on status;
-- * the index of revoked and suspended certificates leaves status out (a
--   certificate is revoked or suspended only once issued);
-- * the to-be-signed bytes are dropped once the certificate, which holds
--   them, is stored (tbs is then empty), so the row barely grows.
CREATE TABLE pending_certificates (
    serial      TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);
INSERT INTO pending_certificates (serial, created_at)
    SELECT serial, created_at FROM certificates WHERE status = 'pending';
DROP INDEX certificates_pending;
DROP INDEX certificates_not_good;
CREATE INDEX certificates_not_good ON certificates (issuer, serial, not_after, revoked_at, revocation_reason, crl_shard)
    WHERE revocation <> 'good';
-- Room on each page for its rows' certificates: about three rows a page,
-- 2.7 kB a certificate on disk, against 1.9 kB and two index entries each
-- with a full page.
ALTER TABLE certificates SET (fillfactor = 50);
