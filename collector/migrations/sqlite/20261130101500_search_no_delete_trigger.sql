-- Full-text search (issue 15): no AFTER DELETE trigger into the FTS5 table.
-- With SQLite 3.46 (the one sqlx bundles), a DELETE on events whose trigger
-- deletes from a contentless_delete FTS5 table fails once with "no such
-- table: events" after another connection changed the schema (seen when a
-- test plays an attacker dropping the append-only triggers). Search only
-- answers events still stored (it joins events by seq), so words of events
-- removed by `retain` are unreachable; they stay in the index until it is
-- rebuilt: INSERT INTO events_fts(events_fts) VALUES ('rebuild') is not
-- available for a contentless table, so drop and re-create it from events.
DROP TRIGGER events_fts_delete;
