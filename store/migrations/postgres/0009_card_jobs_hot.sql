-- Finishing a card job (state, finished_at) becomes a HOT update: the index on
-- (pinfl, finished_at) served no query (jobs are found by their id, a person's
-- card by person_cards), and it put two new index entries behind every
-- finished job. The lease taken when a job is claimed was already HOT.
DROP INDEX card_jobs_pinfl;
-- A job row is about 200 bytes and changes twice after it is written.
ALTER TABLE card_jobs SET (fillfactor = 70);
