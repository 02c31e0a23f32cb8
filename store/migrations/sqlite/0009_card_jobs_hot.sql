-- The index on (pinfl, finished_at) served no query: jobs are found by their
-- id, a person's current card by person_cards (PostgreSQL's 0009 also leaves
-- room on each page for the finishing update).
DROP INDEX card_jobs_pinfl;
