-- Full-text search and the integrity page (issue 15).
--
-- events_search holds a tsvector per event (GIN-indexed), written by an
-- AFTER INSERT trigger in the same transaction as the event row: the writer
-- needs no change and no event row is ever updated. Indexed: every string
-- value of the event except its `security` member (path, url, user, tenant,
-- pod, namespace, status text, user agent, allow-listed and redacted headers,
-- captured bodies), plus the numeric status code. Masked values are stored as
-- "[REDACTED]" or an HMAC, so a secret's clear text is never indexed.
-- Text is cut into lowercase runs of letters and digits before to_tsvector
-- ('simple': no stemming, no stop words), as SQLite's unicode61 does, so both
-- backends find the same events.
CREATE TABLE events_search (
    seq BIGINT PRIMARY KEY,
    doc tsvector NOT NULL
);
CREATE INDEX events_search_doc ON events_search USING GIN (doc);

-- The words of one stored event. jsonb refuses \u0000 and lone surrogates,
-- and a trigger error would refuse the whole batch, so such events (and
-- absurd ones) are indexed from their raw text instead.
CREATE FUNCTION meshaudit_search_doc(canonical TEXT, status BIGINT) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    words TEXT;
BEGIN
    IF length(canonical) > 4000000 OR canonical ~ '\\u(0000|d[89a-f])' OR canonical ~ '[0-9]{255}' THEN
        words := canonical;
    ELSE
        SELECT string_agg(v #>> '{}', ' ') INTO words
        FROM jsonb_path_query(canonical::jsonb - 'security', 'strict $.** ? (@.type() == "string")') AS v;
    END IF;
    words := coalesce(status::text, '') || ' ' || coalesce(words, '');
    RETURN to_tsvector('simple', left(regexp_replace(words, '[^[:alnum:]]+', ' ', 'g'), 500000));
END
$$;

CREATE FUNCTION meshaudit_search_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A seq can come back only after someone bypassed the append-only
    -- triggers; the insert must still not fail (verify will tell).
    INSERT INTO events_search (seq, doc) VALUES (NEW.seq, meshaudit_search_doc(NEW.canonical, NEW.status))
    ON CONFLICT (seq) DO UPDATE SET doc = EXCLUDED.doc;
    RETURN NULL;
END
$$;

CREATE FUNCTION meshaudit_search_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM events_search WHERE seq = OLD.seq;
    RETURN NULL;
END
$$;

-- Row triggers on a partitioned table are cloned to every partition, present and future.
CREATE TRIGGER events_search_insert AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION meshaudit_search_insert();
-- Retention removes an event's words with the event.
CREATE TRIGGER events_search_delete AFTER DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION meshaudit_search_delete();

-- Events stored before this migration.
INSERT INTO events_search (seq, doc)
SELECT seq, meshaudit_search_doc(canonical, status) FROM events;

-- Stats by method have an index like the other filters; the integrity page
-- counts unverified events from a partial index that holds only them.
CREATE INDEX events_method ON events (method, seq);
CREATE INDEX events_unverified ON events (seq) WHERE verified = false;
