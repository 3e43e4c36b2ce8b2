-- meshaudit collector, SQLite schema (SPEC §7 storage).

-- The append-only log. `canonical` is the canonical JSON of the event as
-- received; the other columns are derived from it for the query filters.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL,
    received_at   TEXT    NOT NULL,
    received_us   INTEGER NOT NULL,
    event_hash    TEXT    NOT NULL,
    chain_hash    TEXT    NOT NULL,
    verified      INTEGER,
    verify_reason TEXT,
    canonical     TEXT    NOT NULL,
    tenant        TEXT,
    namespace     TEXT,
    pod           TEXT,
    user_id       TEXT,
    method        TEXT,
    path          TEXT,
    status        INTEGER,
    event_time_us INTEGER
);
CREATE INDEX events_id ON events (id);
CREATE INDEX events_tenant ON events (tenant, seq);
CREATE INDEX events_namespace_pod ON events (namespace, pod, seq);
CREATE INDEX events_user ON events (user_id, seq);
CREATE INDEX events_status ON events (status, seq);
CREATE INDEX events_event_time ON events (event_time_us);
CREATE INDEX events_received ON events (received_us);

-- Every id ever stored, kept after retention: ids are unique forever.
CREATE TABLE event_ids (
    id         TEXT PRIMARY KEY,
    event_hash TEXT    NOT NULL,
    seq        INTEGER NOT NULL
) WITHOUT ROWID;

-- The newest link, written in the same transaction as the events.
CREATE TABLE chain_head (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    seq        INTEGER NOT NULL,
    chain_hash TEXT    NOT NULL
);
INSERT INTO chain_head (singleton, seq, chain_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE idempotency (
    scope       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    body_sha256 TEXT    NOT NULL,
    answer      TEXT    NOT NULL,
    expires_us  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_expires ON idempotency (expires_us);

-- What `retain` removed: verification starts from the newest anchor.
CREATE TABLE retention_log (
    first_kept_seq  INTEGER PRIMARY KEY,
    prev_chain_hash TEXT    NOT NULL,
    archive_sha256  TEXT    NOT NULL,
    archive_name    TEXT    NOT NULL,
    removed         INTEGER NOT NULL,
    created_at      TEXT    NOT NULL
);

-- Append-only. Rows below the newest retention anchor may be deleted (that is
-- how `retain` removes them, after writing the anchor); nothing else may.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN OLD.seq >= COALESCE((SELECT MAX(first_kept_seq) FROM retention_log), 0)
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: events are append-only (only retain removes rows)');
END;
CREATE TRIGGER event_ids_no_update BEFORE UPDATE ON event_ids
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: event_ids is append-only');
END;
CREATE TRIGGER event_ids_no_delete BEFORE DELETE ON event_ids
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: event_ids is append-only');
END;
CREATE TRIGGER retention_log_no_update BEFORE UPDATE ON retention_log
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: retention_log is append-only');
END;
CREATE TRIGGER retention_log_no_delete BEFORE DELETE ON retention_log
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: retention_log is append-only');
END;
