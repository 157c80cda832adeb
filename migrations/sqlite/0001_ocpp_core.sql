-- OCPP 1.6J central system: chargers, connectors, idTags, transactions,
-- sampled meter values, anomalies and the message log.
-- Times are stored by sqlx as RFC 3339 text; JSON as text.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT UNIQUE,
    name          TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL DEFAULT 'driver',
    password_hash TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE chargers (
    id                         TEXT PRIMARY KEY,
    registration_status        TEXT NOT NULL,
    password_hash              TEXT,
    vendor                     TEXT,
    model                      TEXT,
    charge_point_serial_number TEXT,
    charge_box_serial_number   TEXT,
    firmware_version           TEXT,
    iccid                      TEXT,
    imsi                       TEXT,
    meter_type                 TEXT,
    meter_serial_number        TEXT,
    last_boot_at               TEXT,
    last_heartbeat_at          TEXT,
    last_seen_at               TEXT,
    created_at                 TEXT NOT NULL
);

CREATE TABLE connectors (
    charger_id        TEXT NOT NULL REFERENCES chargers(id),
    connector_id      INTEGER NOT NULL,
    status            TEXT NOT NULL,
    error_code        TEXT NOT NULL,
    info              TEXT,
    vendor_id         TEXT,
    vendor_error_code TEXT,
    status_at         TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (charger_id, connector_id)
);

CREATE TABLE id_tags (
    id_tag        TEXT PRIMARY KEY,
    user_id       TEXT REFERENCES users(id),
    status        TEXT NOT NULL DEFAULT 'Accepted',
    expiry_date   TEXT,
    parent_id_tag TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE transactions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id       TEXT NOT NULL,
    connector_id     INTEGER NOT NULL,
    id_tag           TEXT NOT NULL,
    id_tag_status    TEXT NOT NULL,
    reservation_id   INTEGER,
    meter_start      INTEGER NOT NULL,
    start_time       TEXT NOT NULL,
    -- What makes a retransmitted StartTransaction the same one.
    start_key        TEXT NOT NULL UNIQUE,
    status           TEXT NOT NULL,
    meter_stop       INTEGER,
    stop_time        TEXT,
    stop_reason      TEXT,
    stop_id_tag      TEXT,
    last_register_wh REAL,
    last_register_at TEXT,
    energy_wh        REAL NOT NULL DEFAULT 0,
    soc_start        REAL,
    soc_last         REAL,
    soc_last_at      TEXT,
    power_w_last     REAL,
    received_at      TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX transactions_by_charger ON transactions (charger_id, connector_id, status);
CREATE INDEX transactions_by_id_tag ON transactions (id_tag, status);

CREATE TABLE meter_values (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id     TEXT NOT NULL,
    connector_id   INTEGER NOT NULL,
    transaction_id INTEGER,
    sampled_at     TEXT NOT NULL,
    measurand      TEXT NOT NULL,
    phase          TEXT,
    unit           TEXT,
    context        TEXT,
    location       TEXT,
    format         TEXT,
    value          TEXT NOT NULL,
    -- The same reading sent twice (a retransmission, or StopTransaction's
    -- transactionData repeating MeterValues) has the same key and is kept once.
    sample_key     TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    UNIQUE (charger_id, sample_key)
);
CREATE INDEX meter_values_by_transaction ON meter_values (transaction_id);

CREATE TABLE anomalies (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id     TEXT NOT NULL,
    transaction_id INTEGER,
    kind           TEXT NOT NULL,
    detail         TEXT NOT NULL,
    occurred_at    TEXT NOT NULL
);
CREATE INDEX anomalies_by_charger ON anomalies (charger_id, id);

CREATE TABLE ocpp_messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id   TEXT NOT NULL,
    direction    TEXT NOT NULL,
    message_type INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    action       TEXT,
    payload      TEXT NOT NULL,
    logged_at    TEXT NOT NULL
);
CREATE INDEX ocpp_messages_by_charger ON ocpp_messages (charger_id, id);
