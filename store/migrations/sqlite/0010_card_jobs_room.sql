-- PostgreSQL's 0010 gives card_jobs more free space per page; SQLite has no
-- fill factor. Kept so both databases number their migrations alike.
SELECT 1;
