-- The registry adapter is a mutual-TLS client of its own: it may post
-- population-registry events and nothing else.
ALTER TABLE ra_clients DROP CONSTRAINT ra_clients_role_check;
ALTER TABLE ra_clients ADD CONSTRAINT ra_clients_role_check
    CHECK (role IN ('personalization-line', 'operator', 'registry'));

-- Every registry event ever received, by the id the source gave it. The
-- primary key is what applies an event once, whichever node, retry or rerun
-- of a file gets there first; the row is also the answer a retry gets back.
CREATE TABLE registry_events (
    id          TEXT PRIMARY KEY,
    body_hash   BYTEA NOT NULL,      -- SHA-256 of the event as parsed: same id, other content is a conflict
    kind        TEXT NOT NULL,
    pinfl       TEXT NOT NULL,
    seq         BIGINT NOT NULL,     -- the source's order
    outcome     TEXT NOT NULL CHECK (outcome IN ('applied', 'no_change', 'unknown_person',
                    'unknown_document', 'replaced', 'stale', 'refused')),
    serials     TEXT NOT NULL,       -- certificates it changed, space-separated
    detail      TEXT,                -- why, when nothing was applied
    actor       TEXT NOT NULL,
    applied_at  BIGINT NOT NULL      -- Unix microseconds
);
-- What operators are shown: events that found nobody, or were refused.
CREATE INDEX registry_events_unmatched ON registry_events (applied_at)
    WHERE outcome IN ('unknown_person', 'unknown_document', 'refused');

-- What events have taught about a person, also for people the registry
-- extract does not list: the newest name change applied (so an older one
-- arriving late changes nothing) and the date of death (so issuance stops).
-- A batch locks its people's rows first, in PINFL order: two nodes applying
-- events of one person queue here.
CREATE TABLE registry_state (
    pinfl        TEXT PRIMARY KEY,
    names_seq    BIGINT NOT NULL,
    deceased_on  TEXT,
    updated_at   BIGINT NOT NULL
);
-- Deaths recorded lately: a certificate whose issuance checked for a death
-- just before one was recorded is found here and revoked.
CREATE INDEX registry_state_deaths ON registry_state (updated_at) WHERE deceased_on IS NOT NULL;

-- Certificates naming a person by an old name are revoked once the grace
-- period has passed, against the names of the newest change.
CREATE TABLE name_reviews (
    pinfl        TEXT PRIMARY KEY,
    due_at       BIGINT NOT NULL,    -- Unix seconds
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
