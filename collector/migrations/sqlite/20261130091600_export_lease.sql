-- Exporters on several collector replicas sharing one store (SPEC §11): one
-- replica at a time runs each exporter, the one holding its lease (`owner`,
-- `host/listen address` of the replica, until `lease_until_us`, µs since the
-- epoch). A replica that dies loses the lease when it expires.
ALTER TABLE export_state ADD COLUMN owner TEXT;
ALTER TABLE export_state ADD COLUMN lease_until_us INTEGER NOT NULL DEFAULT 0;
