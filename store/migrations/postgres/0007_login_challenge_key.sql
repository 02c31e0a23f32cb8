-- Login challenges are no longer stored when issued: each carries an HMAC
-- under this key (one row, made by the first node to start, read by all),
-- and becomes a row of auth_challenges only when a login uses it; the
-- primary key makes that use single. Unused rows of the former scheme are
-- dropped; used ones are the login record and stay.
CREATE TABLE login_challenge_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    secret      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
DELETE FROM auth_challenges WHERE used_at IS NULL;
