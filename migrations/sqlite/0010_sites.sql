-- Site load management: a site is a set of chargers behind one grid
-- connection, with a limit the server shares among their transactions.

CREATE TABLE sites (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    -- 'A' (amperes per phase) or 'kW'; limit_value, min_per_car and
    -- safe_default are in this unit.
    unit         TEXT NOT NULL,
    limit_value  REAL NOT NULL,
    phases       INTEGER NOT NULL,
    voltage      REAL NOT NULL,
    -- The least a car is given; a car that cannot have it is paused (0).
    min_per_car  REAL NOT NULL,
    -- Each member charger's TxDefaultProfile: what a car draws before the
    -- server's TxProfile reaches it.
    safe_default REAL NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- A charger belongs to at most one site.
CREATE TABLE site_chargers (
    charger_id   TEXT PRIMARY KEY,
    site_id      TEXT NOT NULL REFERENCES sites (id),
    added_at     TEXT NOT NULL
);
CREATE INDEX site_chargers_by_site ON site_chargers (site_id, charger_id);
