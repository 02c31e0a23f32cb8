-- Signed checkpoints of the audit chain: the head (seq, hash) signed by the
-- audit key in the key store. The hash chain makes a checkpoint vouch for
-- every entry up to it, so whoever rewrites entries and recomputes the
-- hashes (a database administrator, say) cannot make the signatures agree
-- without the key, which never leaves the HSM. Each checkpoint also signs
-- the one before it (prev_seq, prev_hash), so deleting a checkpoint breaks
-- the checkpoints' own chain.
CREATE TABLE audit_checkpoints (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,    -- Unix seconds, the signer's clock
    hash        BYTEA NOT NULL,
    key_id      TEXT NOT NULL,      -- SHA-256 of the audit key's SubjectPublicKeyInfo, hex
    prev_seq    BIGINT NOT NULL,    -- the checkpoint before (0: none)
    prev_hash   BYTEA NOT NULL,
    signature   BYTEA NOT NULL
);
