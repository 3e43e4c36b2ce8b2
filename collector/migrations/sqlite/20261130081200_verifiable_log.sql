-- The verifiable log (SPEC §9): the Merkle tree over the events in seq order,
-- its signed checkpoints and a generated signing key. Every table is
-- append-only; `retain` removes events but never these rows.

-- Leaf index (seq - 1) → record hash (SHA-256 of the stored canonical JSON).
-- Level-0 tiles are the leaf hashes of these; entry bundles are these.
CREATE TABLE log_entries (
    idx         INTEGER PRIMARY KEY,
    record_hash BLOB    NOT NULL CHECK (length(record_hash) = 32)
);

-- Tile level ≥ 1 hashes: the tree node of height 8·level and index idx,
-- written once, when the 256 hashes below it are complete.
CREATE TABLE log_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Every signed checkpoint (C2SP tlog-checkpoint as a signed note).
CREATE TABLE log_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB    NOT NULL,
    note       TEXT    NOT NULL,
    created_us INTEGER NOT NULL
);

-- A signer key generated on first start when none is configured.
CREATE TABLE log_signing_keys (
    name       TEXT PRIMARY KEY,
    signer     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TRIGGER log_entries_no_update BEFORE UPDATE ON log_entries
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: log_entries is append-only');
END;
CREATE TRIGGER log_entries_no_delete BEFORE DELETE ON log_entries
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: log_entries is append-only');
END;
CREATE TRIGGER log_nodes_no_update BEFORE UPDATE ON log_nodes
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: log_nodes is append-only');
END;
CREATE TRIGGER log_nodes_no_delete BEFORE DELETE ON log_nodes
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: log_nodes is append-only');
END;
CREATE TRIGGER log_checkpoints_no_update BEFORE UPDATE ON log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: log_checkpoints is append-only');
END;
CREATE TRIGGER log_checkpoints_no_delete BEFORE DELETE ON log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: log_checkpoints is append-only');
END;
CREATE TRIGGER log_signing_keys_no_update BEFORE UPDATE ON log_signing_keys
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: log_signing_keys is append-only');
END;
CREATE TRIGGER log_signing_keys_no_delete BEFORE DELETE ON log_signing_keys
BEGIN
    SELECT RAISE(ABORT, 'meshaudit: log_signing_keys is append-only');
END;
