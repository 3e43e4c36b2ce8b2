-- The verifiable log (SPEC §9): the Merkle tree over the events in seq order,
-- its signed checkpoints and a generated signing key. Every table is
-- append-only; `retain` removes events but never these rows.

-- Leaf index (seq - 1) → record hash (SHA-256 of the stored canonical JSON).
-- Level-0 tiles are the leaf hashes of these; entry bundles are these.
CREATE TABLE log_entries (
    idx         BIGINT PRIMARY KEY,
    record_hash BYTEA  NOT NULL CHECK (length(record_hash) = 32)
);

-- Tile level ≥ 1 hashes: the tree node of height 8·level and index idx,
-- written once, when the 256 hashes below it are complete.
CREATE TABLE log_nodes (
    level INTEGER NOT NULL,
    idx   BIGINT  NOT NULL,
    hash  BYTEA   NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Every signed checkpoint (C2SP tlog-checkpoint as a signed note).
CREATE TABLE log_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       BYTEA  NOT NULL,
    note       TEXT   NOT NULL,
    created_us BIGINT NOT NULL
);

-- A signer key generated on first start when none is configured.
CREATE TABLE log_signing_keys (
    name       TEXT PRIMARY KEY,
    signer     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TRIGGER log_entries_no_change BEFORE UPDATE OR DELETE ON log_entries
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER log_entries_no_truncate BEFORE TRUNCATE ON log_entries
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER log_nodes_no_change BEFORE UPDATE OR DELETE ON log_nodes
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER log_nodes_no_truncate BEFORE TRUNCATE ON log_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER log_checkpoints_no_change BEFORE UPDATE OR DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER log_checkpoints_no_truncate BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER log_signing_keys_no_change BEFORE UPDATE OR DELETE ON log_signing_keys
    FOR EACH ROW EXECUTE FUNCTION meshaudit_refuse();
CREATE TRIGGER log_signing_keys_no_truncate BEFORE TRUNCATE ON log_signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION meshaudit_refuse();
