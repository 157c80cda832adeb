-- Outgoing webhooks: a durable outbox. Events are written by triggers in
-- the same transaction as the change they describe, whichever code path
-- made it, so an event exists exactly when its change was committed.

CREATE TABLE webhook_events (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    -- Set once a delivery row exists for each configured receiver.
    dispatched  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_events_undispatched ON webhook_events (id) WHERE dispatched = 0;

CREATE TABLE webhook_deliveries (
    event_id        BIGINT NOT NULL REFERENCES webhook_events (id),
    url             TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    -- delivered_ms or failed (gave up) ends a delivery.
    delivered_ms    BIGINT,
    failed          INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    PRIMARY KEY (event_id, url)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms)
    WHERE delivered_ms IS NULL AND failed = 0;

CREATE FUNCTION webhook_iso(t TIMESTAMPTZ) RETURNS TEXT LANGUAGE sql IMMUTABLE AS
$$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

CREATE FUNCTION webhook_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;

CREATE FUNCTION webhook_session_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO webhook_events (kind, data, created_ms) VALUES (
            'session.started',
            json_build_object('id', NEW.id, 'userId', NEW.user_id, 'stationId', NEW.station_id,
                              'connectorId', NEW.connector_id, 'chargerId', NEW.charger_id,
                              'status', NEW.status, 'startTime', webhook_iso(NEW.start_time),
                              'currency', NEW.currency)::TEXT,
            webhook_now_ms());
    ELSIF OLD.status = 'active' AND NEW.status IN ('completed', 'cancelled') THEN
        INSERT INTO webhook_events (kind, data, created_ms) VALUES (
            'session.' || NEW.status,
            json_build_object('id', NEW.id, 'userId', NEW.user_id, 'stationId', NEW.station_id,
                              'connectorId', NEW.connector_id, 'chargerId', NEW.charger_id,
                              'transactionId', NEW.transaction_id, 'status', NEW.status,
                              'startTime', webhook_iso(NEW.start_time),
                              'endTime', webhook_iso(NEW.end_time),
                              'endReason', NEW.end_reason, 'energyWh', NEW.energy_wh,
                              'costMinor', NEW.cost_minor, 'currency', NEW.currency)::TEXT,
            webhook_now_ms());
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_session_started AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION webhook_session_event();
CREATE TRIGGER webhook_session_ended AFTER UPDATE OF status ON sessions
    FOR EACH ROW EXECUTE FUNCTION webhook_session_event();

CREATE FUNCTION webhook_payment_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO webhook_events (kind, data, created_ms) VALUES (
            'payment.link_created',
            json_build_object('id', NEW.id, 'sessionId', NEW.session_id, 'userId', NEW.user_id,
                              'provider', NEW.provider, 'url', NEW.url,
                              'amountMinor', NEW.amount_minor, 'currency', NEW.currency,
                              'status', NEW.status, 'expiresAt', webhook_iso(NEW.expires_at))::TEXT,
            webhook_now_ms());
    ELSIF OLD.status <> 'paid' AND NEW.status = 'paid' THEN
        INSERT INTO webhook_events (kind, data, created_ms) VALUES (
            'payment.paid',
            json_build_object('id', NEW.id, 'sessionId', NEW.session_id, 'userId', NEW.user_id,
                              'provider', NEW.provider, 'amountMinor', NEW.amount_minor,
                              'currency', NEW.currency, 'status', NEW.status,
                              'paidAt', webhook_iso(NEW.paid_at))::TEXT,
            webhook_now_ms());
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_payment_link_created AFTER INSERT ON payment_links
    FOR EACH ROW EXECUTE FUNCTION webhook_payment_event();
CREATE TRIGGER webhook_payment_paid AFTER UPDATE OF status ON payment_links
    FOR EACH ROW EXECUTE FUNCTION webhook_payment_event();
