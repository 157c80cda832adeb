-- Payments: a double-entry ledger of prepaid wallets, balance checks kept
-- for audit, payment links, and the Stripe events already handled.

-- One row per money movement; its entries always sum to zero.
CREATE TABLE ledger_transactions (
    id          TEXT PRIMARY KEY,
    -- credit | hold | release | settle
    kind        TEXT NOT NULL,
    -- What it is for (a session id, an operator's credit id); a settlement
    -- or a hold exists at most once per session.
    reference   TEXT NOT NULL,
    memo        TEXT,
    created_at  TEXT NOT NULL,
    UNIQUE (kind, reference)
);

CREATE TABLE ledger_entries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id  TEXT NOT NULL REFERENCES ledger_transactions(id),
    -- wallet:{user}:{address}, hold:{user}:{address}, funding, revenue
    account         TEXT NOT NULL,
    currency        TEXT NOT NULL,
    amount_minor    INTEGER NOT NULL
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account, currency);

CREATE TABLE balance_checks (
    id                     TEXT PRIMARY KEY,
    user_id                TEXT NOT NULL,
    wallet_address         TEXT NOT NULL,
    chain                  TEXT NOT NULL,
    currency               TEXT NOT NULL,
    requested_amount_minor INTEGER NOT NULL,
    actual_balance_minor   INTEGER,
    status                 TEXT NOT NULL,
    provider               TEXT NOT NULL,
    error_message          TEXT,
    metadata               TEXT NOT NULL,
    session_id             TEXT,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX balance_checks_by_user ON balance_checks (user_id, created_at);

CREATE TABLE payment_links (
    id           TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    provider     TEXT NOT NULL,
    provider_ref TEXT,
    url          TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    -- pending | paid | expired | failed
    status       TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    paid_at      TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX payment_links_by_session ON payment_links (session_id);
CREATE INDEX payment_links_by_provider_ref ON payment_links (provider_ref);
-- A session never has two live links.
CREATE UNIQUE INDEX payment_links_one_pending_per_session ON payment_links (session_id) WHERE status = 'pending';
-- Nor is it paid twice.
CREATE UNIQUE INDEX payment_links_one_paid_per_session ON payment_links (session_id) WHERE status = 'paid';

CREATE TABLE stripe_events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    received_at TEXT NOT NULL
);

-- Sessions started through the payment API carry their wallet, their check,
-- and whether the payment step (hold release, link) is still owed.
ALTER TABLE sessions ADD COLUMN wallet_address TEXT;
ALTER TABLE sessions ADD COLUMN chain TEXT;
ALTER TABLE sessions ADD COLUMN balance_check_id TEXT;
ALTER TABLE sessions ADD COLUMN payment_due INTEGER NOT NULL DEFAULT 0;
