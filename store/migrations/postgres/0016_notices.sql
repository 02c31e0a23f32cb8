-- Notices to people about their certificates (expiring soon, suspended,
-- restored, revoked, a name the registry changed): an outbox. A notice is
-- written in the same transaction as its cause (the status change, the
-- registry event, the expiry scan's cursor), so a committed cause always has
-- its notice and a rolled-back one never has; a worker delivers it to the
-- notification system's webhook afterwards.
--
-- `key` names the cause, so the same cause never makes two notices whoever
-- records it and however often: 'revoked:SERIAL' (revocation is final),
-- 'suspended:SERIAL:MICROS', 'restored:SERIAL:MICROS', 'expiring-30:SERIAL',
-- 'registry:EVENT:SERIAL'. It is also the notice's id for the receiver, who
-- drops a key it has seen (a crash between its answer and our commit sends
-- the same key again).
CREATE TABLE notices (
    key              TEXT PRIMARY KEY,
    pinfl            TEXT NOT NULL,
    serial           TEXT,                -- upper-case hex; NULL: about the person
    kind             TEXT NOT NULL CHECK (kind IN
                       ('expiring', 'suspended', 'restored', 'revoked', 'name_changed')),
    reason           TEXT,                -- RFC 5280 reason name (keyCompromise, ...)
    on_date          TEXT NOT NULL,       -- YYYY-MM-DD (UTC): the day the notice is about
    created_at       BIGINT NOT NULL,     -- Unix microseconds
    state            TEXT NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,   -- deliveries started
    -- Unix seconds: when a worker may take it next. A claim moves it to the
    -- lease's end, so a notice whose worker died comes due again by itself.
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,                -- the worker holding it, while it sends
    lease_until      BIGINT,              -- Unix seconds
    last_error       TEXT,                -- why the last attempt failed (no secret)
    delivered_at     BIGINT               -- Unix seconds
);
-- The workers' question, "what is due?", reads only pending notices: the
-- delivered ones (nearly all of them, in time) are not in this index.
CREATE INDEX notices_due ON notices (next_attempt_at) WHERE state = 'pending';
-- A person's notices, newest first (the citizens' API, operators).
CREATE INDEX notices_pinfl ON notices (pinfl, created_at);
-- Operators list by state (failed ones above all), newest first.
CREATE INDEX notices_state ON notices (state, created_at);

-- How far each expiry threshold (30 days, 7 days...) has been scanned:
-- certificates whose notAfter is at or before (scanned_to, scanned_serial)
-- in (not_after, serial) order have had their notice. Each scan reads only
-- certificates that newly entered the window since the last one, never the
-- whole certificates table. scanned_serial NULL: everything up to and
-- including scanned_to is done.
CREATE TABLE notice_expiry_cursors (
    days            BIGINT PRIMARY KEY,
    scanned_to      BIGINT NOT NULL,      -- Unix seconds (a notAfter)
    scanned_serial  TEXT,
    updated_at      BIGINT NOT NULL       -- Unix seconds
);

-- The expiry scan walks people's certificates by notAfter. Neither column
-- ever changes once the intent is recorded, so storing the signed
-- certificate stays a HOT update (see 0009). Built once on upgrade: on a
-- table of tens of millions of rows this takes a while and holds off writes
-- meanwhile; run the upgrade in a maintenance window.
CREATE INDEX certificates_not_after ON certificates (not_after, serial) WHERE pinfl IS NOT NULL;
