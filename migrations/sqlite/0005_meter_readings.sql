-- Durable ingestion at the machine's limit.
--
-- Meter values are kept one row per meterValue entry (the sampled values a
-- charger took at one moment, as JSON), not one row per sampled value: a
-- three-phase charger's 8-value reading is one row and one index entry.
-- Each sampled value is still stored once: the engine recognises repeats
-- (retransmissions, transactionData) before writing, so the unique index
-- that used to do it, and that cost a scattered index page per charger per
-- commit, is gone.
CREATE TABLE meter_readings (
    id             INTEGER PRIMARY KEY,
    charger_id     TEXT NOT NULL,
    connector_id   INTEGER NOT NULL,
    transaction_id INTEGER,
    sampled_at     TEXT NOT NULL,
    sample_count   INTEGER NOT NULL,
    -- [{"measurand", "phase", "unit", "context", "location", "format", "value"}, ...]
    samples        TEXT NOT NULL,
    received_at    TEXT NOT NULL
);

INSERT INTO meter_readings (charger_id, connector_id, transaction_id, sampled_at, sample_count, samples, received_at)
SELECT charger_id, connector_id, transaction_id, sampled_at, count(*),
       json_group_array(json_object('measurand', measurand, 'phase', phase, 'unit', unit, 'context', context,
                                    'location', location, 'format', format, 'value', value)),
       min(received_at)
FROM meter_values
GROUP BY charger_id, connector_id, transaction_id, sampled_at
ORDER BY min(id);

DROP TABLE meter_values;

CREATE INDEX meter_readings_by_transaction ON meter_readings (transaction_id, sampled_at)
    WHERE transaction_id IS NOT NULL;
CREATE INDEX meter_readings_loose_by_charger ON meter_readings (charger_id, sampled_at)
    WHERE transaction_id IS NULL;

-- idTags are compared case-insensitively (OCPP CiString) but kept as
-- entered; one tag may not exist in two spellings.
CREATE UNIQUE INDEX id_tags_case_insensitive ON id_tags (upper(id_tag));
DROP INDEX transactions_by_id_tag;
CREATE INDEX transactions_open_by_id_tag ON transactions (upper(id_tag)) WHERE status = 'active';
