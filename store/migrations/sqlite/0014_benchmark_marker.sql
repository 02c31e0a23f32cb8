-- A database made by the benchmark binary says so: muhr-bench writes its
-- synthetic rows and made-up people only into a database that carries this
-- row, and it puts the row only into a database with no certificate at all.
-- A database holding real certificates never gets it, so a benchmark
-- pointed at one by mistake refuses to run.
CREATE TABLE benchmark_marker (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    created_at  INTEGER NOT NULL
);
