-- meshaudit collector, PostgreSQL schema (SPEC §7 storage).

-- The append-only log, partitioned by month of received_at (the collector's
-- clock). Monthly partitions are created ahead by the collector; the DEFAULT
-- partition catches anything outside them.
CREATE TABLE events (
    seq           BIGINT      NOT NULL,
    id            TEXT        NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    event_hash    TEXT        NOT NULL,
    chain_hash    TEXT        NOT NULL,
    verified      BOOLEAN,
    verify_reason TEXT,
    canonical     TEXT        NOT NULL,
    tenant        TEXT,
    namespace     TEXT,
    pod           TEXT,
    user_id       TEXT,
    method        TEXT,
    path          TEXT,
    status        BIGINT,
    event_time_us BIGINT,
    PRIMARY KEY (seq, received_at)
) PARTITION BY RANGE (received_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX events_seq ON events (seq);
CREATE INDEX events_id ON events (id);
CREATE INDEX events_tenant ON events (tenant, seq);
CREATE INDEX events_namespace_pod ON events (namespace, pod, seq);
CREATE INDEX events_user ON events (user_id, seq);
CREATE INDEX events_status ON events (status, seq);
CREATE INDEX events_event_time ON events (event_time_us);

-- Ids are unique forever: a unique index on the partitioned table would have
-- to include received_at, so they live here (and survive retention).
CREATE TABLE event_ids (
    id         TEXT PRIMARY KEY,
    event_hash TEXT   NOT NULL,
    seq        BIGINT NOT NULL
);

-- The newest link, written in the same transaction as the events.
CREATE TABLE chain_head (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    seq        BIGINT NOT NULL,
    chain_hash TEXT   NOT NULL
);
INSERT INTO chain_head (singleton, seq, chain_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE idempotency (
    scope       TEXT   NOT NULL,
    key         TEXT   NOT NULL,
    body_sha256 TEXT   NOT NULL,
    answer      TEXT   NOT NULL,
    expires_us  BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_expires ON idempotency (expires_us);

-- What `retain` removed: verification starts from the newest anchor.
CREATE TABLE retention_log (
    first_kept_seq  BIGINT PRIMARY KEY,
    prev_chain_hash TEXT   NOT NULL,
    archive_sha256  TEXT   NOT NULL,
    archive_name    TEXT   NOT NULL,
    removed         BIGINT NOT NULL,
    created_at      TEXT   NOT NULL
);

CREATE FUNCTION meshaudit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'meshaudit: % is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END
$$;

-- Rows below the newest retention anchor may be deleted (that is how
-- `retain` removes them, after writing the anchor); nothing else may.
CREATE FUNCTION meshaudit_events_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq < COALESCE((SELECT max(first_kept_seq) FROM retention_log), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'meshaudit: events are append-only (only retain removes rows)';
END
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION meshaudit_events_delete();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
-- Statement triggers are not inherited by partitions: each partition gets its own.
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events_default
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();

CREATE TRIGGER event_ids_no_update BEFORE UPDATE OR DELETE ON event_ids
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER event_ids_no_truncate BEFORE TRUNCATE ON event_ids
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER retention_log_no_change BEFORE UPDATE OR DELETE ON retention_log
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER retention_log_no_truncate BEFORE TRUNCATE ON retention_log
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
