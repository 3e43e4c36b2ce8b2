-- Workload keys (SPEC §10): the Ed25519 key registry, the verified batch
-- records and each stored event's link to its batch. All append-only: a key
-- is never deleted or changed, only retired (a row in workload_key_retirements),
-- so everything signed under it stays verifiable.

CREATE TABLE workload_keys (
    keyid         TEXT   PRIMARY KEY,
    algorithm     TEXT   NOT NULL CHECK (algorithm = 'ed25519'),
    public_key    TEXT   NOT NULL,            -- base64 of the 32 bytes
    namespaces    TEXT   NOT NULL,            -- JSON array; [] = any namespace
    not_before_us BIGINT,
    created_at    TEXT   NOT NULL
);

CREATE TABLE workload_key_retirements (
    keyid        TEXT   PRIMARY KEY REFERENCES workload_keys (keyid),
    not_after_us BIGINT NOT NULL,
    retired_at   TEXT   NOT NULL
);

-- One row per verified batch that stored at least one event; identified by
-- its digest and signature (each worker VM counts its own batch seq). The id
-- may have gaps (a rolled-back transaction): it orders nothing.
CREATE TABLE batch_records (
    id           BIGSERIAL PRIMARY KEY,
    batch_digest TEXT   NOT NULL,
    keyid        TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    batch_seq    BIGINT NOT NULL,
    signature_ts TEXT,
    signature    TEXT   NOT NULL,             -- base64 Ed25519 signature
    event_hashes TEXT   NOT NULL,             -- JSON array of hex, in line order
    received_at  TEXT   NOT NULL,
    UNIQUE (batch_digest, signature)
);

-- Stored event (seq) → the batch record it arrived in.
CREATE TABLE event_batches (
    seq      BIGINT PRIMARY KEY,
    batch_id BIGINT NOT NULL REFERENCES batch_records (id)
);
CREATE INDEX event_batches_batch ON event_batches (batch_id);

CREATE TRIGGER workload_keys_no_change BEFORE UPDATE OR DELETE ON workload_keys
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER workload_keys_no_truncate BEFORE TRUNCATE ON workload_keys
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER workload_key_retirements_no_change BEFORE UPDATE OR DELETE ON workload_key_retirements
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER workload_key_retirements_no_truncate BEFORE TRUNCATE ON workload_key_retirements
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER batch_records_no_change BEFORE UPDATE OR DELETE ON batch_records
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER batch_records_no_truncate BEFORE TRUNCATE ON batch_records
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER event_batches_no_change BEFORE UPDATE OR DELETE ON event_batches
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER event_batches_no_truncate BEFORE TRUNCATE ON event_batches
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
