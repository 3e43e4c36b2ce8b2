-- Full-text search (issue 15): a small GIN pending list. New entries wait in
-- the pending list until it is merged into the index, and every search scans
-- the whole list: with the default 4 MB a one-match search took 25 ms instead
-- of 1 ms, and the merge runs inside the inserting (group-commit) transaction,
-- whose time MESHAUDIT_DB_TIMEOUT_MS bounds. 512 kB keeps both small.
ALTER INDEX events_search_doc SET (gin_pending_list_limit = 512);
