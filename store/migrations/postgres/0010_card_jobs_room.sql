-- Room on each page for every job row's next version at once. A group's jobs
-- are claimed together, so they share pages, and the group is finished in one
-- transaction: the rows' old versions cannot be pruned before it commits, so
-- with 30 % free (0009) only about half the finished jobs found room on their
-- page and the rest moved, with new index entries. At 45 % every row's update
-- fits beside it. Pages already written keep their old fill.
ALTER TABLE card_jobs SET (fillfactor = 45);
