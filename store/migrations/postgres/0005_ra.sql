-- The card job (RA) a certificate was issued for, and its role on the card
-- ('auth', 'sign'). The unique pair is what makes a job issue each role once,
-- whichever process or retry gets there first. NULLs never collide.
ALTER TABLE certificates ADD COLUMN job TEXT;
ALTER TABLE certificates ADD COLUMN job_role TEXT;
CREATE UNIQUE INDEX certificates_job ON certificates (job, job_role);

-- Machines and people allowed on the mutual-TLS listener, one row per
-- credential (certificate serial); a name may hold several over time.
CREATE TABLE ra_clients (
    serial      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('personalization-line', 'operator')),
    created_at  BIGINT NOT NULL
);
CREATE INDEX ra_clients_name ON ra_clients (name);

-- One row per card job: the caller's request id (scoped by client name), the
-- hash of the request that created it, and how it ended.
CREATE TABLE card_jobs (
    job           TEXT PRIMARY KEY,       -- CLIENT/REQUEST_ID
    body_hash     BYTEA NOT NULL,
    pinfl         TEXT NOT NULL,
    document      TEXT NOT NULL,
    district      TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    owner         TEXT NOT NULL,          -- the process that claimed it
    lease_until   BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,          -- Unix microseconds
    finished_at   BIGINT
);
CREATE INDEX card_jobs_pinfl ON card_jobs (pinfl, finished_at);

-- Each person's current card: the job whose certificates a new card supersedes.
CREATE TABLE person_cards (
    pinfl       TEXT PRIMARY KEY,
    job         TEXT NOT NULL,
    document    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Population registry extract (muhr registry import): what the RA knows about a
-- person besides the request. Later an adapter to the interagency platform.
CREATE TABLE population_registry (
    pinfl        TEXT PRIMARY KEY,
    surname      TEXT NOT NULL,
    given_name   TEXT NOT NULL,
    patronymic   TEXT,
    birth_date   TEXT NOT NULL,           -- YYYY-MM-DD
    deceased_on  TEXT,                    -- YYYY-MM-DD, NULL while alive
    imported_at  BIGINT NOT NULL
);

-- Outcomes of personalization requests for the pilot report: no personal data,
-- one row per first answer to a job (retries are not counted again).
CREATE TABLE card_outcomes (
    id            BIGSERIAL PRIMARY KEY,
    at            BIGINT NOT NULL,          -- Unix microseconds
    district      TEXT NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('issued', 'refused', 'failed')),
    reason        TEXT,                   -- refusals: the rule; failures: a short cause
    certificates  BIGINT NOT NULL,
    latency_us    BIGINT NOT NULL
);
CREATE INDEX card_outcomes_at ON card_outcomes (at);

-- Operators read a job's or a certificate's history by object.
CREATE INDEX audit_log_object ON audit_log (object);
