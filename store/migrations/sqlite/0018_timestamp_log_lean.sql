-- No query reads the token log by imprint (a token is confirmed by its
-- serial), and an index on a random hash made every token's insert touch a
-- random page of it: the TSA's rate fell by a third. An operator who must
-- find the tokens over a document scans the log, off-line.
DROP INDEX timestamp_tokens_imprint;
