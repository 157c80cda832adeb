-- What the server keeps of the state it sets on chargers: reservations (the
-- server allocates the OCPP reservationId), charging profiles assigned to
-- chargers and connectors, and each charger's local authorization list.

CREATE TABLE reservations (
    -- The OCPP reservationId sent in ReserveNow.
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id     TEXT NOT NULL,
    connector_id   INTEGER NOT NULL,
    id_tag         TEXT NOT NULL,
    parent_id_tag  TEXT,
    -- The driver the reservation is for (the idTag's owner).
    user_id        TEXT,
    expiry_date    TEXT NOT NULL,
    -- pending, accepted, faulted, occupied, rejected, unavailable, used, cancelled, expired
    status         TEXT NOT NULL,
    transaction_id INTEGER,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
-- One live reservation per connector, whatever races.
CREATE UNIQUE INDEX reservations_one_live_per_connector ON reservations (charger_id, connector_id)
    WHERE status IN ('pending', 'accepted');
-- The expiry sweeper reads only the live ones that are due.
CREATE INDEX reservations_live_by_expiry ON reservations (expiry_date)
    WHERE status IN ('pending', 'accepted');
CREATE INDEX reservations_by_user ON reservations (user_id, id);
CREATE INDEX reservations_by_charger ON reservations (charger_id, id);

CREATE TABLE charging_profiles (
    -- The OCPP chargingProfileId.
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id     TEXT NOT NULL,
    connector_id   INTEGER NOT NULL,
    -- ChargePointMaxProfile, TxDefaultProfile or TxProfile
    purpose        TEXT NOT NULL,
    stack_level    INTEGER NOT NULL,
    transaction_id INTEGER,
    -- The csChargingProfiles object sent, JSON.
    profile        TEXT NOT NULL,
    -- pending (not answered yet), accepted, rejected, not_supported, failed
    status         TEXT NOT NULL,
    last_error     TEXT,
    sent_at        TEXT,
    answered_at    TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
-- A profile of the same purpose and stack level on a connector replaces the
-- one before it, on the charger (OCPP 1.6, 3.13.2) as here.
CREATE UNIQUE INDEX charging_profiles_one_per_level ON charging_profiles (charger_id, connector_id, purpose, stack_level);

CREATE TABLE local_lists (
    charger_id     TEXT PRIMARY KEY,
    -- 1 once an operator enabled it and the charger said it supports it.
    enabled        INTEGER NOT NULL,
    -- The most entries one list may hold (the smaller of the charger's
    -- SendLocalListMaxLength and LocalAuthListMaxLength).
    max_length     INTEGER NOT NULL,
    -- The version of the list the charger confirmed, and its entries as
    -- sent (JSON [{idTag, idTagInfo}]): what a differential update is
    -- computed against.
    version        INTEGER NOT NULL,
    entries        TEXT NOT NULL,
    -- synced, pending (tags changed since), failed, not_supported
    sync_state     TEXT NOT NULL,
    last_error     TEXT,
    synced_at      TEXT,
    updated_at     TEXT NOT NULL
);
