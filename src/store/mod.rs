//! Durable storage behind one [`Store`] trait, with a SQLite implementation
//! (the embedded default) and a PostgreSQL one (several nodes may share it).
//!
//! Reads go straight to a connection pool. Writes that a charger waits for go
//! through a group-commit writer ([`batch`]): writes from many chargers are
//! committed together in one database transaction, each inside its own
//! savepoint, so thousands of messages per second cost a handful of disk
//! flushes instead of one each, and one failing write does not fail its
//! neighbours. A charger is answered only after the commit holding its write.

pub mod batch;
pub mod model;
mod payments_sql;
mod sql;

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

pub use model::*;
pub use sql::{PostgresStore, SqliteStore};

/// Which transactions to list.
#[derive(Debug, Clone, Default)]
pub struct TransactionFilter {
    pub charger_id: Option<String>,
    pub status: Option<String>,
    pub limit: Option<i64>,
}

/// What payments keep: the wallet ledger, balance checks, payment links and
/// the Stripe events seen. Every `Store` is one.
#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Posts a balanced movement once per (kind, reference); false if it was posted before.
    async fn ledger_post(
        &self,
        kind: &str,
        reference: &str,
        memo: &str,
        entries: &[LedgerEntry],
    ) -> Result<bool>;
    async fn ledger_balance(&self, account: &str, currency: &str) -> Result<i64>;
    /// (account, currency, balance) of every account starting with `prefix`.
    async fn ledger_accounts(&self, prefix: &str) -> Result<Vec<(String, String, i64)>>;
    async fn insert_balance_check(&self, check: &BalanceCheckRecord) -> Result<()>;
    async fn balance_check(&self, id: &str) -> Result<Option<BalanceCheckRecord>>;
    async fn balance_checks_of_user(&self, user_id: &str) -> Result<Vec<BalanceCheckRecord>>;
    /// Records a session's wallet and balance check (and links the check to it).
    async fn attach_payment(&self, session_id: &str, payment: &SessionPayment) -> Result<()>;
    /// Ended sessions whose payment step has not been done.
    async fn sessions_with_payment_due(&self) -> Result<Vec<String>>;
    /// Does a session's payment step once, atomically: clears `payment_due`,
    /// applies an admin's final cost, releases its hold, stores its first
    /// link. False when another caller did it already.
    async fn settle_session_payment(
        &self,
        session_id: &str,
        release: Option<(&str, &[LedgerEntry])>,
        cost_override: Option<i64>,
        link: Option<&PaymentLinkRecord>,
    ) -> Result<bool>;
    /// Stores a link, expiring `expire_first` in the same transaction.
    async fn create_payment_link(
        &self,
        link: &PaymentLinkRecord,
        expire_first: Option<&str>,
    ) -> Result<()>;
    async fn payment_link(&self, id: &str) -> Result<Option<PaymentLinkRecord>>;
    async fn payment_link_by_ref(&self, provider_ref: &str) -> Result<Option<PaymentLinkRecord>>;
    async fn payment_links_of_session(&self, session_id: &str) -> Result<Vec<PaymentLinkRecord>>;
    async fn pending_links(&self) -> Result<Vec<PaymentLinkRecord>>;
    /// Moves a pending link to `status`; false if it was not pending.
    async fn set_link_status(&self, id: &str, status: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Marks a pending link paid and posts the settlement, in one transaction.
    async fn pay_link_from_ledger(
        &self,
        link_id: &str,
        reference: &str,
        entries: &[LedgerEntry],
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// True the first time an event id is seen.
    async fn record_stripe_event(&self, id: &str, kind: &str) -> Result<bool>;
}

#[async_trait]
pub trait Store: PaymentStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Succeeds once the database answers.
    async fn ping(&self) -> Result<()>;
    /// Waits until every write queued so far (including the message log,
    /// which nobody waits for) is committed.
    async fn flush(&self) -> Result<()>;

    async fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Stores `value` unless the key has one, and returns the value kept, so
    /// that several nodes starting at once agree on one.
    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String>;

    async fn charger(&self, id: &str) -> Result<Option<ChargerRecord>>;
    async fn chargers(&self) -> Result<Vec<ChargerRecord>>;
    /// Creates or updates a charger as an operator does, before it ever
    /// connects. `password_hash`: `None` leaves it, `Some(None)` clears it.
    async fn provision_charger(
        &self,
        id: &str,
        registration: Option<RegistrationStatus>,
        password_hash: Option<Option<String>>,
    ) -> Result<()>;
    /// Records a BootNotification and returns the charger's registration
    /// status; a charger never seen before is created with `status_if_new`.
    async fn record_boot(
        &self,
        id: &str,
        info: BootInfo,
        status_if_new: RegistrationStatus,
        at: DateTime<Utc>,
    ) -> Result<RegistrationStatus>;
    async fn record_heartbeat(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
    /// Notes that the charger was heard from (or left) at `at`.
    async fn record_seen(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
    /// Keeps a connector's latest status. A connector shown Available while a
    /// transaction is still open on it closes that transaction; the ids of
    /// the closed ones are returned.
    async fn record_status(&self, status: ConnectorStatus) -> Result<Vec<i64>>;
    async fn connectors(&self, charger_id: &str) -> Result<Vec<ConnectorStatus>>;

    async fn upsert_user(&self, user: &UserRecord) -> Result<()>;
    async fn user(&self, id: &str) -> Result<Option<UserRecord>>;
    async fn upsert_id_tag(&self, tag: &IdTagRecord) -> Result<()>;
    async fn id_tag(&self, id_tag: &str) -> Result<Option<IdTagRecord>>;

    async fn start_transaction(&self, tx: NewTransaction) -> Result<StartOutcome>;
    async fn add_meter_values(&self, batch: MeterBatch) -> Result<()>;
    async fn stop_transaction(&self, stop: StopRequest) -> Result<StopOutcome>;
    async fn transaction(&self, id: i64) -> Result<Option<TransactionRecord>>;
    async fn transactions(&self, filter: TransactionFilter) -> Result<Vec<TransactionRecord>>;
    async fn meter_values(&self, transaction_id: i64) -> Result<Vec<StoredSample>>;

    async fn record_anomaly(
        &self,
        charger_id: &str,
        transaction_id: Option<i64>,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<()>;
    async fn anomalies(&self, charger_id: Option<&str>, limit: i64) -> Result<Vec<Anomaly>>;

    async fn station(&self, id: &str) -> Result<Option<StationRecord>>;
    async fn stations(&self) -> Result<Vec<StationRecord>>;
    /// Creates or updates a station (its `created_at` is kept); returns it as stored.
    async fn upsert_station(&self, station: &StationRecord) -> Result<StationRecord>;

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>>;
    async fn users(&self) -> Result<Vec<UserRecord>>;
    /// Makes sure a user row exists for a token's subject (tokens are trusted
    /// by signature, so a subject may not be stored yet).
    async fn ensure_user(&self, id: &str) -> Result<()>;
    async fn id_tags_of_user(&self, user_id: &str) -> Result<Vec<IdTagRecord>>;

    /// Creates a session unless its driver or its connector already has an
    /// active one (checked and inserted in one write).
    async fn create_session(
        &self,
        session: SessionRecord,
    ) -> Result<std::result::Result<(), SessionConflict>>;
    /// Saves a session's changing fields if it is still active; false when it
    /// was not (it completed or was cancelled meanwhile).
    async fn save_session(&self, session: SessionRecord) -> Result<bool>;
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>>;
    async fn active_session(&self, user_id: &str) -> Result<Option<SessionRecord>>;
    /// A driver's sessions, newest first.
    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>>;
    async fn active_sessions(&self) -> Result<Vec<SessionRecord>>;

    /// Queues a frame for the message log without waiting for it: the log
    /// must never slow a charger down. [`Store::flush`] waits for it.
    fn log_message(&self, entry: NewLogEntry);
    async fn messages(&self, charger_id: &str, limit: i64) -> Result<Vec<LoggedMessage>>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens (creating and migrating) the database a `CSMS_DATABASE_URL` names.
pub async fn connect(url: &str) -> Result<SharedStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        anyhow::bail!("unsupported database URL {url:?}: expected sqlite://PATH or postgres://...")
    }
}
