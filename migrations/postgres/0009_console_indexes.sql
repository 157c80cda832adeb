-- The operator console's lists, newest first, each one index walk: every
-- session by start, every payment link and balance check by creation.
CREATE INDEX sessions_by_start ON sessions (start_time);
CREATE INDEX payment_links_by_created ON payment_links (created_at);
CREATE INDEX balance_checks_by_created ON balance_checks (created_at);
CREATE INDEX anomalies_by_transaction ON anomalies (transaction_id);
