-- Full-text search (issue 15): the index forgets the words of events that
-- `retain` removed while no AFTER DELETE trigger kept it in step (migration
-- *_search_no_delete_trigger.sql). From now on each retain chunk removes its
-- events' words in its own transaction (search::forget_removed_sqlite).
--
-- Retain removes the rows below its anchor highest first, so what it removed
-- is every seq below the first stored event (all of them when none is
-- stored), and, when a run was interrupted, the seqs between the highest row
-- still below the newest anchor and that anchor.
DELETE FROM events_fts
WHERE rowid < COALESCE((SELECT MIN(seq) FROM events), 9223372036854775807);

DELETE FROM events_fts
WHERE rowid < (SELECT MAX(first_kept_seq) FROM retention_log)
  AND rowid > (
      SELECT COALESCE(MAX(seq), 0) FROM events
      WHERE seq < (SELECT MAX(first_kept_seq) FROM retention_log)
  );
