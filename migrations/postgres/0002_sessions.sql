-- The session engine: stations with their tariff, charging sessions fed by
-- the app or by a charger, and each driver's battery capacity.

CREATE TABLE stations (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    -- Price per kWh in millionths of the currency's major unit.
    price_micros BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

ALTER TABLE users ADD COLUMN battery_capacity_wh BIGINT;

CREATE TABLE sessions (
    id                    TEXT PRIMARY KEY,
    -- A token's subject need not be a stored user, so no foreign key.
    user_id               TEXT NOT NULL,
    station_id            TEXT NOT NULL,
    station_name          TEXT NOT NULL,
    connector_id          TEXT NOT NULL,
    source                TEXT NOT NULL,
    status                TEXT NOT NULL,
    charger_id            TEXT,
    ocpp_connector_id     BIGINT,
    transaction_id        BIGINT UNIQUE,
    id_tag                TEXT,
    start_time            TIMESTAMPTZ NOT NULL,
    end_time              TIMESTAMPTZ,
    last_reading_at       TIMESTAMPTZ,
    battery_level_start   DOUBLE PRECISION,
    battery_level         DOUBLE PRECISION,
    energy_wh             DOUBLE PRECISION NOT NULL DEFAULT 0,
    energy_reported       BOOLEAN NOT NULL DEFAULT FALSE,
    price_micros          BIGINT NOT NULL,
    currency              TEXT NOT NULL,
    cost_minor            BIGINT NOT NULL DEFAULT 0,
    battery_capacity_wh   BIGINT NOT NULL,
    station_rating        BIGINT,
    end_reason            TEXT,
    remote_start_deadline TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id, start_time);
-- One active session per driver and per connector, whatever races.
CREATE UNIQUE INDEX sessions_one_active_per_user ON sessions (user_id) WHERE status = 'active';
CREATE UNIQUE INDEX sessions_one_active_per_connector ON sessions (station_id, connector_id) WHERE status = 'active';

-- The demo station of the documented examples: 165 NGN per kWh.
INSERT INTO stations (id, name, price_micros, currency, created_at, updated_at)
VALUES ('evliter-lagos-victoria-island', 'EvLiter Charging Hub - Victoria Island', 165000000, 'NGN',
        now(), now());
