-- Full-text search and the integrity page (issue 15).
--
-- A contentless FTS5 index keyed by seq (the events rowid): the text lives
-- only in events.canonical, the index holds tokens. It is written by a trigger
-- in the same transaction as the event row, so the writer needs no change and
-- no event row is ever updated. Indexed: every string value of the event
-- except its `security` member (path, url, user, tenant, pod, namespace,
-- status text, user agent, headers as allow-listed and redacted by the filter,
-- captured bodies), plus the numeric status code. Masked values are stored as
-- "[REDACTED]" or an HMAC, so a secret's clear text is never indexed.
-- unicode61 without diacritic folding, so both backends tokenise alike:
-- lowercase runs of letters and digits.
CREATE VIRTUAL TABLE events_fts USING fts5(
    doc,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0'
);

-- OR REPLACE: a seq can come back only after someone bypassed the
-- append-only triggers; the insert must still not fail (verify will tell).
CREATE TRIGGER events_fts_insert AFTER INSERT ON events
BEGIN
    INSERT OR REPLACE INTO events_fts (rowid, doc) VALUES (
        NEW.seq,
        COALESCE(NEW.status, '') || ' ' || COALESCE((
            SELECT group_concat(value, ' ')
            FROM json_tree(json_remove(NEW.canonical, '$.security'))
            WHERE type = 'text'
        ), '')
    );
END;

-- Retention removes an event's words with the event.
CREATE TRIGGER events_fts_delete AFTER DELETE ON events
BEGIN
    DELETE FROM events_fts WHERE rowid = OLD.seq;
END;

-- Events stored before this migration.
INSERT INTO events_fts (rowid, doc)
SELECT seq,
       COALESCE(status, '') || ' ' || COALESCE((
           SELECT group_concat(value, ' ')
           FROM json_tree(json_remove(canonical, '$.security'))
           WHERE type = 'text'
       ), '')
FROM events;

-- Stats by method have an index like the other filters; the integrity page
-- counts unverified events from a partial index that holds only them.
CREATE INDEX events_method ON events (method, seq);
CREATE INDEX events_unverified ON events (seq) WHERE verified = 0;
