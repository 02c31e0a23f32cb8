-- Delegated OCSP signing certificates (RFC 6960 4.2.2.2), newest last. The
-- responder signs with the newest one that is valid; its key lives in the key
-- store under `key_label`, separate from every CA key.
CREATE TABLE ocsp_signers (
    serial      TEXT PRIMARY KEY,
    issuer      TEXT NOT NULL,
    key_label   TEXT NOT NULL,
    key_spec    TEXT NOT NULL,
    not_before  BIGINT NOT NULL,
    not_after   BIGINT NOT NULL,
    der         BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX ocsp_signers_newest ON ocsp_signers (issuer, not_after);
