//! Durable storage behind one [`Store`] trait, with a SQLite implementation
//! (the embedded default) and a PostgreSQL one (several nodes may share it).
//!
//! The store persists and reads; it decides nothing about sessions or
//! transactions. The engine (`crate::engine`) hands it what a charger message
//! changes as one [`ChargerWrite`], and the store commits it in one database
//! transaction, so an acknowledged message always has all its effects stored.
//!
//! Reads go straight to a connection pool. Writes that a charger waits for go
//! through a group-commit writer ([`writer`]): writes from many chargers are
//! gathered into a batch and committed together, the rows of a kind written
//! with one multi-row statement, so thousands of messages per second cost a
//! handful of statements and one disk flush per batch. A charger is answered
//! only after the commit holding its write.
//!
//! The trait is split by aggregate (chargers, transactions and readings,
//! sessions, people and stations, the message log, payments); `Store` is all
//! of them. `use crate::store::*` brings every trait into scope.

pub mod managed;
pub mod model;
mod payments_sql;
mod sql;
pub mod writer;

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

pub use managed::*;
pub use model::*;
pub use sql::{PostgresStore, SqliteStore};

/// Whether a store error is the database refusing a duplicate key (a unique
/// index or primary key), on either database, as sqlx classifies it
/// (`DatabaseError::is_unique_violation`: PostgreSQL's 23505, SQLite's
/// `SQLITE_CONSTRAINT_UNIQUE` and `_PRIMARYKEY`). Looks through any context
/// added on the way up.
pub fn is_unique_violation(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .is_some_and(|db| db.is_unique_violation())
    })
}

/// Which transactions to list.
#[derive(Debug, Clone, Default)]
pub struct TransactionFilter {
    pub charger_id: Option<String>,
    pub status: Option<String>,
    pub limit: Option<i64>,
}

/// A page of a list: at most `limit` rows after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// One page of rows and how many there are in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: i64,
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
    /// Ended sessions whose payment step has not been done and that have not
    /// changed since `unchanged_since` (times compared in SQL: only what is
    /// due is read).
    async fn sessions_with_payment_due(
        &self,
        unchanged_since: DateTime<Utc>,
    ) -> Result<Vec<String>>;
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
    /// Pending links whose `expires_at` is `now` or earlier (compared in SQL).
    async fn pending_links_expired_by(&self, now: DateTime<Utc>) -> Result<Vec<PaymentLinkRecord>>;
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

/// Chargers and their connectors.
#[async_trait]
pub trait ChargerStore: Send + Sync {
    async fn charger(&self, id: &str) -> Result<Option<ChargerRecord>>;
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
    async fn connectors(&self, charger_id: &str) -> Result<Vec<ConnectorStatus>>;
}

/// Transactions and the meter readings that belong to them.
#[async_trait]
pub trait TransactionStore: Send + Sync {
    /// Stores a StartTransaction: reads the [`StartFacts`] inside the write,
    /// lets `decide` (the engine) make the [`StartPlan`], and commits the
    /// transaction with everything the plan changes.
    async fn start_transaction(
        &self,
        tx: NewTransaction,
        decide: DecideStart,
    ) -> Result<StartOutcome>;
    async fn transaction(&self, id: i64) -> Result<Option<TransactionRecord>>;
    async fn transactions(&self, filter: TransactionFilter) -> Result<Vec<TransactionRecord>>;
    /// A page of a charger's transactions (of one status, if given), newest first.
    async fn transactions_page(
        &self,
        charger_id: &str,
        status: Option<&str>,
        page: Page,
    ) -> Result<Paged<TransactionRecord>>;
    /// A charger's transactions that are still open.
    async fn open_transactions(&self, charger_id: &str) -> Result<Vec<TransactionRecord>>;
    /// Every sampled value of a transaction, by time.
    async fn meter_values(&self, transaction_id: i64) -> Result<Vec<StoredSample>>;
    /// The latest `limit` readings of a transaction (or, with `None`, of the
    /// charger outside any transaction), newest first.
    async fn recent_readings(
        &self,
        charger_id: &str,
        transaction_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredReading>>;
    /// A transaction's (or the charger's loose) readings sampled within
    /// `from..=to`.
    async fn readings_between(
        &self,
        charger_id: &str,
        transaction_id: Option<i64>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredReading>>;
    async fn ingest_counts(&self) -> Result<IngestCounts>;
}

/// Charging sessions.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates a session unless its driver or its connector already has an
    /// active one (checked and inserted in one write).
    async fn create_session(
        &self,
        session: SessionRecord,
    ) -> Result<std::result::Result<(), SessionConflict>>;
    /// Saves a session the REST side owns (an app session: its energy,
    /// battery, cost, status, end) if it is still active; false when it was
    /// not (it completed or was cancelled meanwhile).
    async fn save_session(&self, session: SessionRecord) -> Result<bool>;
    /// Saves what a driver tells about a charger's session (battery level,
    /// rating) without touching the charger's figures; false when it is no
    /// longer active.
    async fn save_driver_fields(
        &self,
        session_id: &str,
        battery_level: Option<f64>,
        station_rating: Option<i64>,
    ) -> Result<bool>;
    /// Cancels an active session: nothing is billed. False when it was not active.
    async fn cancel_session(
        &self,
        session_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool>;
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>>;
    /// The session bound to a transaction, whatever its status.
    async fn session_of_transaction(&self, transaction_id: i64) -> Result<Option<SessionRecord>>;
    async fn active_session(&self, user_id: &str) -> Result<Option<SessionRecord>>;
    /// A driver's sessions, newest first.
    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>>;
    /// A page of a driver's sessions started at or after `since`, newest first.
    async fn user_sessions_page(
        &self,
        user_id: &str,
        since: Option<DateTime<Utc>>,
        page: Page,
    ) -> Result<Paged<SessionRecord>>;
    async fn active_sessions(&self) -> Result<Vec<SessionRecord>>;
    /// Active sessions waiting for a remote start whose deadline is `now` or
    /// earlier and that have no transaction yet (compared in SQL).
    async fn overdue_remote_starts(&self, now: DateTime<Utc>) -> Result<Vec<SessionRecord>>;
}

/// Users, idTags, stations and settings.
#[async_trait]
pub trait PeopleStore: Send + Sync {
    async fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Stores `value` unless the key has one, and returns the value kept, so
    /// that several nodes starting at once agree on one.
    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String>;

    async fn upsert_user(&self, user: &UserRecord) -> Result<()>;
    async fn user(&self, id: &str) -> Result<Option<UserRecord>>;
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>>;
    /// A page of the users, oldest first.
    /// A page of the users, oldest first; with `search` (a [`like_pattern`]),
    /// only those whose id, name or email contains it.
    async fn users_page(&self, search: Option<&str>, page: Page) -> Result<Paged<UserRecord>>;
    /// A page of the ids of stations and chargers (each known as either or
    /// both), in order; with `search` (a [`like_pattern`]), only those whose
    /// id or station name contains it.
    async fn station_ids_page(&self, search: Option<&str>, page: Page) -> Result<Paged<String>>;
    /// Makes sure a user row exists for a token's subject (tokens are trusted
    /// by signature, so a subject may not be stored yet).
    async fn ensure_user(&self, id: &str) -> Result<()>;

    /// Creates or updates an idTag. An existing tag that differs only in
    /// case is the same tag: it is updated and keeps its spelling.
    async fn upsert_id_tag(&self, tag: &IdTagRecord) -> Result<()>;
    /// Looks a tag up case-insensitively.
    async fn id_tag(&self, id_tag: &str) -> Result<Option<IdTagRecord>>;
    async fn id_tags_of_user(&self, user_id: &str) -> Result<Vec<IdTagRecord>>;
    /// A page of the idTags, of one user if given, in tag order; with
    /// `search` (a [`like_pattern`]), only tags containing it.
    async fn id_tags_page(
        &self,
        user_id: Option<&str>,
        search: Option<&str>,
        page: Page,
    ) -> Result<Paged<IdTagRecord>>;

    async fn station(&self, id: &str) -> Result<Option<StationRecord>>;
    /// Creates or updates a station (its `created_at` is kept); returns it as stored.
    async fn upsert_station(&self, station: &StationRecord) -> Result<StationRecord>;
}

/// The message log and the anomalies kept for operators.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Queues a frame for the message log. Nothing waits for its commit, but
    /// nothing is dropped either: when the log falls behind, this waits for
    /// room, so a charger slows down rather than a frame being lost.
    async fn log_message(&self, entry: NewLogEntry);
    /// Frames queued for the log and not yet committed.
    fn log_lag(&self) -> usize;
    /// A page of a charger's message log, newest first.
    async fn messages(&self, charger_id: &str, page: Page) -> Result<Paged<LoggedMessage>>;
    async fn record_anomaly(&self, anomaly: NewAnomaly) -> Result<()>;
    async fn anomalies(&self, charger_id: Option<&str>, limit: i64) -> Result<Vec<Anomaly>>;
}

/// Which sessions an operator lists (every field optional).
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub status: Option<String>,
    pub charger_id: Option<String>,
    pub user_id: Option<String>,
    /// A [`like_pattern`] matched against the station's id and name, the
    /// driver's id and the idTag.
    pub search: Option<String>,
    /// Started at or after.
    pub from: Option<DateTime<Utc>>,
    /// Started before.
    pub to: Option<DateTime<Utc>>,
}

/// One ledger entry of a wallet with the movement it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerMovement {
    pub entry_id: i64,
    pub movement_id: String,
    pub kind: String,
    pub reference: String,
    pub memo: Option<String>,
    pub account: String,
    pub currency: String,
    pub amount_minor: i64,
    pub created_at: DateTime<Utc>,
}

/// `%text%` for a case-insensitive `lower(column) LIKE $n ESCAPE '\'` on
/// both databases, with `%`, `_` and `\` in the text taken literally; `None`
/// for an empty search.
pub fn like_pattern(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Some(pattern)
}

/// What the operator console reads beyond the other aggregates' own lists:
/// every session, payment link, balance check and ledger movement paged in
/// the database, a transaction's anomalies and the frames of its time.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// A page of sessions, newest first.
    async fn sessions_page(&self, query: &SessionQuery, page: Page)
        -> Result<Paged<SessionRecord>>;
    /// A page of payment links (of one status, one user), newest first.
    async fn payment_links_page(
        &self,
        status: Option<&str>,
        user_id: Option<&str>,
        page: Page,
    ) -> Result<Paged<PaymentLinkRecord>>;
    /// A page of balance checks (of one status, one user), newest first.
    async fn balance_checks_page(
        &self,
        status: Option<&str>,
        user_id: Option<&str>,
        page: Page,
    ) -> Result<Paged<BalanceCheckRecord>>;
    /// A page of the ledger entries of a user's wallets and holds
    /// (`wallet:{user}:…`, `hold:{user}:…`), newest first.
    async fn ledger_movements(&self, user_id: &str, page: Page) -> Result<Paged<LedgerMovement>>;
    /// A page of anomalies (of one charger, one transaction), newest first.
    async fn anomalies_page(
        &self,
        charger_id: Option<&str>,
        transaction_id: Option<i64>,
        page: Page,
    ) -> Result<Paged<Anomaly>>;
    /// A charger's frames logged within `from..=to`, oldest first, at most `limit`.
    async fn messages_between(
        &self,
        charger_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<LoggedMessage>>;
}

/// A delivery of a webhook event that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    pub event_id: i64,
    pub url: String,
    pub kind: String,
    /// The event's data, JSON text.
    pub data: String,
    pub created_ms: i64,
    pub attempts: i64,
    pub next_attempt_ms: i64,
}

/// The webhook outbox: events are written by database triggers in the same
/// transaction as their change; these move them to their receivers.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// An event with no change of its own behind it (a charger connecting).
    async fn enqueue_webhook_event(&self, kind: &str, data: &str, now_ms: i64) -> Result<()>;
    /// Gives up to `limit` new events one delivery per receiver, due now
    /// (with no receivers, deletes them). Returns how many events it took.
    async fn dispatch_webhook_events(
        &self,
        urls: &[String],
        now_ms: i64,
        limit: i64,
    ) -> Result<usize>;
    /// Deliveries due at `now_ms`, oldest first.
    async fn due_webhook_deliveries(&self, now_ms: i64, limit: i64) -> Result<Vec<DueDelivery>>;
    /// Takes a due delivery for this worker until `lease_until_ms`: false
    /// when another worker (or node) took it first.
    async fn claim_webhook_delivery(&self, d: &DueDelivery, lease_until_ms: i64) -> Result<bool>;
    async fn webhook_delivered(&self, event_id: i64, url: &str, at_ms: i64) -> Result<()>;
    /// Deletes events created before `before_ms` whose every delivery has
    /// ended (delivered or given up). Returns how many events went.
    async fn prune_webhooks(&self, before_ms: i64) -> Result<u64>;
    /// An attempt failed: try again at `next_attempt_ms`, or never (`None`).
    async fn webhook_attempt_failed(
        &self,
        event_id: i64,
        url: &str,
        attempts: i64,
        next_attempt_ms: Option<i64>,
        error: &str,
    ) -> Result<()>;
}

/// Reservations, charging profiles and local authorization lists: the
/// state the server sets on chargers and keeps itself.
#[async_trait]
pub trait ManagedStore: Send + Sync {
    /// Stores a `pending` reservation and gives it its id (the OCPP
    /// reservationId); `None` when the connector has a live one already
    /// (a unique index decides, whatever races).
    async fn insert_reservation(&self, r: &NewReservation) -> Result<Option<ReservationRecord>>;
    async fn reservation(&self, id: i64) -> Result<Option<ReservationRecord>>;
    /// A page of reservations, newest first, filtered by what is given.
    async fn reservations_page(
        &self,
        charger_id: Option<&str>,
        user_id: Option<&str>,
        status: Option<&str>,
        page: Page,
    ) -> Result<Paged<ReservationRecord>>;
    /// Moves a live (`pending` or `accepted`) reservation to `status`;
    /// false when it was no longer live.
    async fn end_live_reservation(&self, id: i64, status: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Removes a reservation that never reached its charger.
    async fn delete_pending_reservation(&self, id: i64) -> Result<bool>;
    /// Live reservations whose expiry is `now` or earlier (compared in SQL).
    async fn live_reservations_expired_by(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReservationRecord>>;

    /// Stores a profile as `pending`, replacing the one of the same charger,
    /// connector, purpose and stack level (which keeps its id).
    async fn upsert_charging_profile(
        &self,
        p: &NewChargingProfile,
    ) -> Result<ChargingProfileRecord>;
    async fn charging_profile(&self, id: i64) -> Result<Option<ChargingProfileRecord>>;
    /// A charger's profiles, oldest first (the order they are sent in).
    async fn charging_profiles_of(&self, charger_id: &str) -> Result<Vec<ChargingProfileRecord>>;
    /// Keeps the charger's answer to `profile` (the JSON sent); false when
    /// the profile was deleted or replaced meanwhile.
    async fn set_profile_answer(
        &self,
        id: i64,
        profile: &str,
        answer: &ProfileAnswer,
    ) -> Result<bool>;
    async fn delete_charging_profile(&self, id: i64) -> Result<bool>;

    async fn local_list(&self, charger_id: &str) -> Result<Option<LocalListRecord>>;
    async fn local_lists_page(&self, page: Page) -> Result<Paged<LocalListRecord>>;
    async fn enabled_local_lists(&self) -> Result<Vec<LocalListRecord>>;
    async fn save_local_list(&self, list: &LocalListRecord) -> Result<()>;
    /// The idTags a local list holds: every tag that belongs to a user, in
    /// tag order (case-insensitive), at most `limit`.
    async fn local_list_tags(&self, limit: i64) -> Result<Vec<IdTagRecord>>;
}

/// Sites (chargers behind one grid connection) and their members.
#[async_trait]
pub trait SiteStore: Send + Sync {
    /// Creates or replaces a site's configuration (`created_at` is kept).
    async fn upsert_site(&self, site: &SiteRecord) -> Result<SiteRecord>;
    async fn site(&self, id: &str) -> Result<Option<SiteRecord>>;
    async fn sites(&self) -> Result<Vec<SiteRecord>>;
    /// Deletes a site and its memberships, in one transaction.
    async fn delete_site(&self, id: &str) -> Result<bool>;
    /// Every membership, by site then charger.
    async fn site_chargers(&self) -> Result<Vec<SiteChargerRecord>>;
    /// Replaces a site's members, in one transaction; false (nothing
    /// changed) when one of them belongs to another site.
    async fn set_site_chargers(
        &self,
        site_id: &str,
        charger_ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool>;
}

#[async_trait]
pub trait Store:
    ChargerStore
    + TransactionStore
    + SessionStore
    + PeopleStore
    + LogStore
    + PaymentStore
    + WebhookStore
    + ManagedStore
    + SiteStore
    + ConsoleStore
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Succeeds once the database answers.
    async fn ping(&self) -> Result<()>;
    /// Waits until every write queued so far (including the message log,
    /// which nobody waits for) is committed.
    async fn flush(&self) -> Result<()>;
    /// Commits what one charger message changes, in one transaction.
    async fn apply(&self, write: ChargerWrite) -> Result<()>;
    /// Why the last write batch failed, until a batch succeeds again.
    fn write_failure(&self) -> Option<String>;
    /// Writes one small row through the writer: after a failure, whether
    /// the database takes writes again.
    async fn probe_write(&self) -> Result<()>;
    /// The writer's own metrics (batches, batch sizes, commit latency), for
    /// the `/metrics` endpoint to register.
    fn writer_metrics(&self) -> WriterMetrics;
    /// Totals the database holds, for `/metrics`.
    async fn figures(&self) -> Result<StoreFigures>;
}

/// The group-commit writer's metrics. Cloning shares the same counters.
#[derive(Clone)]
pub struct WriterMetrics {
    /// Batches by `outcome`: `committed`, or `failed` (some write in it failed).
    pub batches: prometheus_client::metrics::family::Family<
        Vec<(&'static str, &'static str)>,
        prometheus_client::metrics::counter::Counter,
    >,
    pub batch_size: prometheus_client::metrics::histogram::Histogram,
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
        WriterMetrics {
            batches: Default::default(),
            // 1 to 4,096 writes.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 0.25 ms to about 4 s.
            commit_seconds: Histogram::new(exponential_buckets(0.00025, 2.0, 15)),
        }
    }
}

impl WriterMetrics {
    pub fn batch(&self, writes: usize, took: std::time::Duration, failed: bool) {
        let outcome = if failed { "failed" } else { "committed" };
        self.batches
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
        self.batch_size.observe(writes as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }
}

/// What `/metrics` reads from the database at each scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreFigures {
    /// (status, sessions)
    pub sessions_by_status: Vec<(String, i64)>,
    /// Energy of the completed sessions, Wh.
    pub completed_energy_wh: f64,
    /// (provider, status, links)
    pub payment_links: Vec<(String, String, i64)>,
    /// (provider, status, checks)
    pub balance_checks: Vec<(String, String, i64)>,
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

#[cfg(test)]
mod tests {
    use super::{is_unique_violation, like_pattern};

    #[test]
    fn search_patterns_take_wildcards_literally() {
        assert_eq!(like_pattern("  "), None);
        assert_eq!(like_pattern(" CP-01 ").as_deref(), Some("%cp-01%"));
        assert_eq!(
            like_pattern("50%_a\\b").as_deref(),
            Some("%50\\%\\_a\\\\b%")
        );
    }

    use anyhow::Context;

    #[tokio::test]
    async fn unique_violations_are_told_from_other_database_errors() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE, n INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let insert = |id: i64, email: &'static str, n: Option<i64>| {
            let pool = pool.clone();
            async move {
                sqlx::query("INSERT INTO t (id, email, n) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(email)
                    .bind(n)
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .context("inserting a row")
            }
        };
        insert(1, "a@example.com", Some(1)).await.unwrap();
        let same_email = insert(2, "a@example.com", Some(1)).await.unwrap_err();
        assert!(is_unique_violation(&same_email), "{same_email:#}");
        let same_id = insert(1, "b@example.com", Some(1)).await.unwrap_err();
        assert!(is_unique_violation(&same_id), "{same_id:#}");
        let not_null = insert(3, "c@example.com", None).await.unwrap_err();
        assert!(!is_unique_violation(&not_null), "{not_null:#}");
        assert!(!is_unique_violation(&anyhow::anyhow!(
            "UNIQUE constraint failed"
        )));
    }
}
