-- Workload keys (SPEC §10): the Ed25519 key registry, the verified batch
-- records and each stored event's link to its batch. All append-only: a key
-- is never deleted or changed, only retired (a row in workload_key_retirements),
-- so everything signed under it stays verifiable.

CREATE TABLE workload_keys (
    keyid         TEXT    PRIMARY KEY,
    algorithm     TEXT    NOT NULL CHECK (algorithm = 'ed25519'),
    public_key    TEXT    NOT NULL,            -- base64 of the 32 bytes
    namespaces    TEXT    NOT NULL,            -- JSON array; [] = any namespace
    not_before_us INTEGER,
    created_at    TEXT    NOT NULL
);

CREATE TABLE workload_key_retirements (
    keyid        TEXT    PRIMARY KEY REFERENCES workload_keys (keyid),
    not_after_us INTEGER NOT NULL,
    retired_at   TEXT    NOT NULL
);

-- One row per verified batch that stored at least one event; identified by
-- its digest and signature (each worker VM counts its own batch seq).
CREATE TABLE batch_records (
    id           INTEGER PRIMARY KEY,
    batch_digest TEXT    NOT NULL,
    keyid        TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    batch_seq    INTEGER NOT NULL,
    signature_ts TEXT,
    signature    TEXT    NOT NULL,             -- base64 Ed25519 signature
    event_hashes TEXT    NOT NULL,             -- JSON array of hex, in line order
    received_at  TEXT    NOT NULL,
    UNIQUE (batch_digest, signature)
);

-- Stored event (seq) → the batch record it arrived in.
CREATE TABLE event_batches (
    seq      INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batch_records (id)
);
CREATE INDEX event_batches_batch ON event_batches (batch_id);

CREATE TRIGGER workload_keys_no_update BEFORE UPDATE ON workload_keys
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: workload_keys is append-only (retire a key instead)');
END;
CREATE TRIGGER workload_keys_no_delete BEFORE DELETE ON workload_keys
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: workload_keys is append-only (retire a key instead)');
END;
CREATE TRIGGER workload_key_retirements_no_update BEFORE UPDATE ON workload_key_retirements
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: workload_key_retirements is append-only');
END;
CREATE TRIGGER workload_key_retirements_no_delete BEFORE DELETE ON workload_key_retirements
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: workload_key_retirements is append-only');
END;
CREATE TRIGGER batch_records_no_update BEFORE UPDATE ON batch_records
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: batch_records is append-only');
END;
CREATE TRIGGER batch_records_no_delete BEFORE DELETE ON batch_records
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: batch_records is append-only');
END;
CREATE TRIGGER event_batches_no_update BEFORE UPDATE ON event_batches
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: event_batches is append-only');
END;
CREATE TRIGGER event_batches_no_delete BEFORE DELETE ON event_batches
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: event_batches is append-only');
END;
