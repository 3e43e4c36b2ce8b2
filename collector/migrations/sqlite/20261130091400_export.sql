-- Exporters (SPEC §11): one row per exporter with its durable cursor (the last
-- seq the sink acknowledged), the batch planned before its first send
-- (pending_first..pending_last, resent unchanged after a crash), and what the
-- operator or a refusal set: paused, stopped at a seq with a reason.
-- `generation` is bumped by `export replay`, so an acknowledgement of a batch
-- sent before the replay cannot move the cursor afterwards.
CREATE TABLE export_state (
    exporter       TEXT    PRIMARY KEY,
    cursor_seq     INTEGER NOT NULL DEFAULT 0,
    pending_first  INTEGER,
    pending_last   INTEGER,
    paused         INTEGER NOT NULL DEFAULT 0,
    stopped_seq    INTEGER,
    stopped_reason TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1,
    sink           TEXT    NOT NULL DEFAULT '',
    generation     INTEGER NOT NULL DEFAULT 0,
    delivered      INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT    NOT NULL DEFAULT ''
);
