-- The time-stamping authority's certificates, as ocsp_signers holds the
-- delegated OCSP signers': the TSA signs with the newest valid one, whose
-- key lives in the key store under key_label and signs nothing but tokens.
CREATE TABLE tsa_signers (
    serial      TEXT PRIMARY KEY,
    issuer      TEXT NOT NULL,
    key_label   TEXT NOT NULL,
    key_spec    TEXT NOT NULL,
    not_before  BIGINT NOT NULL,
    not_after   BIGINT NOT NULL,
    der         BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX tsa_signers_newest ON tsa_signers (issuer, not_after);

-- Every token handed out, written before the reply leaves (RFC 3161 leaves
-- the log to the TSA; a token shown years later is confirmed against it).
-- serial is the token's serialNumber in upper-case hex, unique across every
-- node; token_sha256 is the SHA-256 of the whole TimeStampToken as sent.
CREATE TABLE timestamp_tokens (
    serial          TEXT PRIMARY KEY,
    gen_time        BIGINT NOT NULL,
    policy          TEXT NOT NULL,
    hash_algorithm  TEXT NOT NULL,
    imprint         BYTEA NOT NULL,
    nonce           TEXT,
    signer_serial   TEXT NOT NULL,
    token_sha256    BYTEA NOT NULL
);
CREATE INDEX timestamp_tokens_imprint ON timestamp_tokens (imprint);

-- A certificate's status history, read when a signature is judged at a
-- time a time-stamp proves (a suspension since lifted or turned into a
-- revocation is only here).
CREATE INDEX status_changes_serial ON status_changes (serial);
