-- Outgoing webhooks: a durable outbox. Events are written by triggers in
-- the same transaction as the change they describe, whichever code path
-- made it, so an event exists exactly when its change was committed.

CREATE TABLE webhook_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    -- Set once a delivery row exists for each configured receiver.
    dispatched  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_events_undispatched ON webhook_events (id) WHERE dispatched = 0;

CREATE TABLE webhook_deliveries (
    event_id        INTEGER NOT NULL REFERENCES webhook_events (id),
    url             TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    -- delivered_ms or failed (gave up) ends a delivery.
    delivered_ms    INTEGER,
    failed          INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    PRIMARY KEY (event_id, url)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms)
    WHERE delivered_ms IS NULL AND failed = 0;

CREATE TRIGGER webhook_session_started AFTER INSERT ON sessions
BEGIN
    INSERT INTO webhook_events (kind, data, created_ms) VALUES (
        'session.started',
        json_object('id', NEW.id, 'userId', NEW.user_id, 'stationId', NEW.station_id,
                    'connectorId', NEW.connector_id, 'chargerId', NEW.charger_id,
                    'status', NEW.status,
                    'startTime', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.start_time),
                    'currency', NEW.currency),
        CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

CREATE TRIGGER webhook_session_ended AFTER UPDATE OF status ON sessions
WHEN OLD.status = 'active' AND NEW.status IN ('completed', 'cancelled')
BEGIN
    INSERT INTO webhook_events (kind, data, created_ms) VALUES (
        'session.' || NEW.status,
        json_object('id', NEW.id, 'userId', NEW.user_id, 'stationId', NEW.station_id,
                    'connectorId', NEW.connector_id, 'chargerId', NEW.charger_id,
                    'transactionId', NEW.transaction_id, 'status', NEW.status,
                    'startTime', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.start_time),
                    'endTime', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.end_time),
                    'endReason', NEW.end_reason, 'energyWh', NEW.energy_wh,
                    'costMinor', NEW.cost_minor, 'currency', NEW.currency),
        CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

CREATE TRIGGER webhook_payment_link_created AFTER INSERT ON payment_links
BEGIN
    INSERT INTO webhook_events (kind, data, created_ms) VALUES (
        'payment.link_created',
        json_object('id', NEW.id, 'sessionId', NEW.session_id, 'userId', NEW.user_id,
                    'provider', NEW.provider, 'url', NEW.url, 'amountMinor', NEW.amount_minor,
                    'currency', NEW.currency, 'status', NEW.status,
                    'expiresAt', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.expires_at)),
        CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

CREATE TRIGGER webhook_payment_paid AFTER UPDATE OF status ON payment_links
WHEN OLD.status <> 'paid' AND NEW.status = 'paid'
BEGIN
    INSERT INTO webhook_events (kind, data, created_ms) VALUES (
        'payment.paid',
        json_object('id', NEW.id, 'sessionId', NEW.session_id, 'userId', NEW.user_id,
                    'provider', NEW.provider, 'amountMinor', NEW.amount_minor,
                    'currency', NEW.currency, 'status', NEW.status,
                    'paidAt', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.paid_at)),
        CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
