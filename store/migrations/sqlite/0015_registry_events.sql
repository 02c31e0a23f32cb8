-- The registry adapter is a mutual-TLS client of its own: it may post
-- population-registry events and nothing else. SQLite cannot change a CHECK,
-- so the table is rebuilt.
CREATE TABLE ra_clients_new (
    serial      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('personalization-line', 'operator', 'registry')),
    created_at  BIGINT NOT NULL
);
INSERT INTO ra_clients_new (serial, name, role, created_at)
    SELECT serial, name, role, created_at FROM ra_clients;
DROP TABLE ra_clients;
ALTER TABLE ra_clients_new RENAME TO ra_clients;
CREATE INDEX ra_clients_name ON ra_clients (name);

-- Every registry event ever received, by the id the source gave it. The
-- primary key is what applies an event once, whichever node, retry or rerun
-- of a file gets there first; the row is also the answer a retry gets back.
CREATE TABLE registry_events (
    id          TEXT PRIMARY KEY,
    body_hash   BLOB NOT NULL,
    kind        TEXT NOT NULL,
    pinfl       TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('applied', 'no_change', 'unknown_person',
                    'unknown_document', 'replaced', 'stale', 'refused')),
    serials     TEXT NOT NULL,
    detail      TEXT,
    actor       TEXT NOT NULL,
    applied_at  BIGINT NOT NULL
);
CREATE INDEX registry_events_unmatched ON registry_events (applied_at)
    WHERE outcome IN ('unknown_person', 'unknown_document', 'refused');

-- What events have taught about a person (see the PostgreSQL migration).
CREATE TABLE registry_state (
    pinfl        TEXT PRIMARY KEY,
    names_seq    BIGINT NOT NULL,
    deceased_on  TEXT,
    updated_at   BIGINT NOT NULL
);
-- Deaths recorded lately: a certificate whose issuance checked for a death
-- just before one was recorded is found here and revoked.
CREATE INDEX registry_state_deaths ON registry_state (updated_at) WHERE deceased_on IS NOT NULL;

CREATE TABLE name_reviews (
    pinfl        TEXT PRIMARY KEY,
    due_at       BIGINT NOT NULL,
    event        TEXT NOT NULL,
    surname      TEXT NOT NULL,
    given_name   TEXT NOT NULL,
    patronymic   TEXT
);
CREATE INDEX name_reviews_due ON name_reviews (due_at);

-- Documents the registry reported lost, stolen or invalidated: a card with
-- one of them is never personalized, even when the report came first.
CREATE TABLE blocked_documents (
    document     TEXT PRIMARY KEY,
    pinfl        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    event        TEXT NOT NULL,
    at           BIGINT NOT NULL       -- Unix seconds
);
