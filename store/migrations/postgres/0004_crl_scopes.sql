-- The CRL shard a certificate names in its CRL distribution point, fixed when it
-- is issued (NULL: it names its CA's whole CRL). Changing the shard count later
-- never moves an existing certificate.
ALTER TABLE certificates ADD COLUMN crl_shard BIGINT;
DROP INDEX certificates_not_good;
CREATE INDEX certificates_not_good ON certificates (issuer, serial, status, not_after, revoked_at, revocation_reason, crl_shard)
    WHERE revocation <> 'good';

-- Delta CRLs list what changed since their base was made, found by time.
CREATE INDEX status_changes_at ON status_changes (issuer, at);

-- Every shard count that was in force when certificates were issued: CRLs are
-- made for each shard any unexpired certificate may point to.
CREATE TABLE crl_shard_counts (
    issuer      TEXT NOT NULL,
    shards      BIGINT NOT NULL,
    first_used  BIGINT NOT NULL,
    PRIMARY KEY (issuer, shards)
);

-- A CRL's scope (-1: the whole CA; n: shard n) and, for a delta CRL, the
-- number of the complete CRL it extends.
ALTER TABLE crls ADD COLUMN shard BIGINT NOT NULL DEFAULT -1;
ALTER TABLE crls ADD COLUMN base_number BIGINT;
DROP INDEX crls_latest;
CREATE INDEX crls_latest ON crls (issuer, kind, shard, number);

-- CRLs are signed, high-entropy DER: compressing them only costs time
-- (0.7 s for a million-entry set), so they are stored out of line as they are.
ALTER TABLE crls ALTER COLUMN der SET STORAGE EXTERNAL;
