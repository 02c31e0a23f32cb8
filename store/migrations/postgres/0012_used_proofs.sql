-- One-time proofs that issuance consumes: a renewal challenge, an ID token.
-- The first use binds the proof to what it was used for (the job and key);
-- a retry of that very request finds its own binding and gets the same
-- certificate back, any other use is a replay. The primary key makes this
-- hold across nodes. Rows outlive the proof's own expiry by nothing: an
-- expired proof is refused before it is looked up.
CREATE TABLE used_proofs (
    proof       TEXT PRIMARY KEY,
    binding     TEXT NOT NULL,
    used_at     BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX used_proofs_expiry ON used_proofs (expires_at);
