-- The token log written by commit group: one row holds every token of one
-- group, so logging costs a row per group instead of a row (and an index
-- entry) per token; on two cores that per-token row was a third of a
-- token's cost (docs/benchmarks.md). A token's serial names its row:
-- 0x41, the stream (4 octets), the batch (4 octets), its index in the
-- batch (2 octets) and the stream's salt (8 random octets, in the row too:
-- a stream number that comes round again after a restore still makes new
-- serials); id is stream * 2^32 + batch. timestamp_tokens keeps
-- the tokens logged before, read but no longer written.
--
-- A stream is one token log writer's life (a process), numbered here so
-- that no two writers on one database ever share one.
CREATE TABLE timestamp_token_streams (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  BIGINT NOT NULL
);

-- records: DER, SEQUENCE OF LoggedToken (store/src/timestamps.rs).
CREATE TABLE timestamp_token_batches (
    id              INTEGER PRIMARY KEY,
    salt            BLOB NOT NULL,
    tokens          INTEGER NOT NULL,
    first_gen_time  BIGINT NOT NULL,
    last_gen_time   BIGINT NOT NULL,
    records         BLOB NOT NULL
);
