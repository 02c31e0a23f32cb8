-- Dual control: an act too grave for one person (suspending, restoring or
-- revoking a CA certificate) is first requested by one operator and done
-- only when a second, different operator approves it. Each side is a
-- registered operator credential that signed the request's statement; the
-- signatures are kept as the evidence. A request is used at most once
-- (the conditional UPDATE that approves it) and lapses at expires_at.
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    action          TEXT NOT NULL,
    object          TEXT NOT NULL,
    params          TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    requester_name  TEXT NOT NULL,
    request_sig     BYTEA NOT NULL,
    requested_at    BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'approved')),
    approved_by     TEXT,
    approver_name   TEXT,
    approval_sig    BYTEA,
    approved_at     BIGINT,
    CHECK (approved_by IS NULL OR approved_by <> requested_by),
    CHECK (approver_name IS NULL OR approver_name <> requester_name)
);
