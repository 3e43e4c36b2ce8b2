-- Full-text search (issue 15): no parallel scans of events_search. The
-- planner cannot estimate how many rows a prefix (`tok12345:*`) matches and,
-- guessing many, starts parallel workers: about 60 ms of start-up for a
-- search that finds 11 events among 1M (p99 97 ms; 37 ms without workers).
ALTER TABLE events_search SET (parallel_workers = 0);
