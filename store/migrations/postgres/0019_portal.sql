-- The citizen portal's logins under way and its sessions.
--
-- A login under way: the OpenID Connect authorization request's state,
-- nonce and PKCE verifier, kept here (not in the browser) until the
-- provider sends the citizen back, then taken once. `state_hash` and
-- `browser_hash` are SHA-256 of the values in the redirect and in the
-- pre-login cookie: a callback must bring both, so a code obtained for
-- another browser (login CSRF) does not log this one in.
CREATE TABLE portal_logins (
    state_hash    TEXT PRIMARY KEY,
    browser_hash  TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    verifier      TEXT NOT NULL,
    return_lang   TEXT NOT NULL,
    expires_at    BIGINT NOT NULL        -- Unix seconds
);

-- A session: `id_hash` is the SHA-256 of the cookie's value, so a copy of
-- this table opens no session. `sealed` is the login's ID token and nonce,
-- encrypted (AES-256-GCM) under a key derived from the cookie's value,
-- which the database never sees: every act re-checks the identity
-- provider's signature on that token, so a row written by hand (a
-- database administrator's) opens nothing and names nobody. `csrf` is the
-- token every state-changing call echoes. Ending a session (logout, the
-- person's death recorded, expiry) sets `ended_at`; a row is deleted a day
-- after it can no longer be used.
CREATE TABLE portal_sessions (
    id_hash       TEXT PRIMARY KEY,
    pinfl         TEXT NOT NULL,
    sealed        TEXT NOT NULL,
    csrf          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,       -- Unix seconds
    expires_at    BIGINT NOT NULL,       -- Unix seconds
    ended_at      BIGINT
);
CREATE INDEX portal_sessions_pinfl ON portal_sessions (pinfl);
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);
CREATE INDEX portal_logins_expires ON portal_logins (expires_at);
