-- Site load management: a site is a set of chargers behind one grid
-- connection, with a limit the server shares among their transactions.

CREATE TABLE sites (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    -- 'A' (amperes per phase) or 'kW'; limit_value, min_per_car and
    -- safe_default are in this unit.
    unit         TEXT NOT NULL,
    limit_value  DOUBLE PRECISION NOT NULL,
    phases       BIGINT NOT NULL,
    voltage      DOUBLE PRECISION NOT NULL,
    -- The least a car is given; a car that cannot have it is paused (0).
    min_per_car  DOUBLE PRECISION NOT NULL,
    -- Each member charger's TxDefaultProfile: what a car draws before the
    -- server's TxProfile reaches it.
    safe_default DOUBLE PRECISION NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

-- A charger belongs to at most one site.
CREATE TABLE site_chargers (
    charger_id   TEXT PRIMARY KEY,
    site_id      TEXT NOT NULL REFERENCES sites (id),
    added_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX site_chargers_by_site ON site_chargers (site_id, charger_id);
