//! The SQL behind [`Store`], written once and compiled for both SQLite and
//! PostgreSQL.
//!
//! The two schemas (`migrations/sqlite`, `migrations/postgres`) differ only in
//! column types, and every statement here is valid on both (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`, `WITH v(...) AS (VALUES ...)
//! UPDATE ... FROM v`), so macros instantiate the same code for each
//! database's concrete sqlx types instead of keeping two copies in step.
//! Placeholders must first appear in increasing order: SQLite numbers `$n`
//! parameters by first appearance.
//!
//! One file per aggregate: [`chargers`], [`transactions`] (and their meter
//! readings), [`sessions`], [`people`] (users, idTags, stations, settings)
//! and [`log`] (message log, anomalies); this file holds the store itself and
//! its group-commit writer.
//!
//! SQLite keeps times as text. sqlx writes `DateTime<Utc>` as RFC 3339 with
//! `+00:00` and 0 or 3 fractional digits (all times are truncated to
//! milliseconds), which sorts like the times it names ('+' < '.' < digits),
//! so comparing them in SQL is sound on both databases.

#[macro_use]
mod chargers;
#[macro_use]
mod console;
#[macro_use]
mod log;
#[macro_use]
mod managed;
#[macro_use]
mod people;
#[macro_use]
mod sessions;
#[macro_use]
mod sites;
#[macro_use]
mod transactions;
#[macro_use]
mod webhooks;
mod sqlite_rows;

use super::managed::*;
use super::model::*;
use super::writer::{Job, Writer};
use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Writes that go through the group-commit writer.
pub(super) enum WriteOp {
    /// What a charger message changed; accumulated with the rest of the
    /// batch into one multi-row statement per kind of row.
    Charger(Box<ChargerWrite>),
    /// A frame for the message log (nobody waits for it).
    Log(Box<NewLogEntry>),
    Boot {
        id: String,
        info: Box<BootInfo>,
        status_if_new: RegistrationStatus,
        at: chrono::DateTime<chrono::Utc>,
    },
    Start(Box<NewTransaction>, DecideStart),
    CreateSession(Box<SessionRecord>),
    SaveSession(Box<SessionRecord>),
    DriverFields {
        id: String,
        battery_level: Option<f64>,
        station_rating: Option<i64>,
        at: chrono::DateTime<chrono::Utc>,
    },
    CancelSession {
        id: String,
        at: chrono::DateTime<chrono::Utc>,
        reason: String,
    },
    /// Commits after everything queued before it: what `flush` waits for.
    Barrier,
    /// Writes one small row, to learn whether the database takes writes
    /// again after a failure.
    Probe,
}

pub(super) enum WriteOut {
    Done,
    Registration(RegistrationStatus),
    Started(Box<StartOutcome>),
    SessionCreated(std::result::Result<(), SessionConflict>),
    Saved(bool),
}

/// Writes (and log frames) that may wait for the writer before senders are
/// made to wait: a few seconds of the heaviest load.
const WRITE_QUEUE: usize = 64 * 1024;

/// How long one batch may take before its writes are failed (and the
/// connection is dropped and opened again): a database that stopped
/// answering must cost chargers an `InternalError` within seconds, never an
/// answer that does not come.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a database connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Log frames kept in memory while the database refuses them, to be written
/// once it is back. Beyond this the oldest are dropped, loudly.
const LOG_CARRY_MAX: usize = 200_000;

/// Rows per multi-row statement, largest first: a batch's rows go out in
/// chunks of these sizes, so each table needs at most a handful of distinct
/// statements, all of which stay in the connection's statement cache.
const CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// Splits `rows` into chunks of the sizes in [`CHUNKS`].
fn chunked<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = CHUNKS
            .iter()
            .copied()
            .find(|size| *size <= rows.len())
            .unwrap_or(1);
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// A statement the database refused (a constraint, a full disk), as opposed
/// to a database that could not be reached: only the first kind is worth
/// retrying write by write.
fn refused_by_database(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Database(_))
        )
    })
}

/// What makes a retransmitted StartTransaction the same one.
pub(super) fn start_key(tx: &NewTransaction) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        tx.charger_id,
        tx.connector_id,
        tx.id_tag,
        tx.meter_start,
        tx.start_time.timestamp_millis()
    )
}

/// Reads the JSON of a stored reading's sampled values.
pub(super) fn samples_from_json(
    text: &str,
    sampled_at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Sample>> {
    let mut samples: Vec<Sample> =
        serde_json::from_str(text).context("reading a stored meter reading")?;
    for s in &mut samples {
        s.sampled_at = sampled_at;
    }
    Ok(samples)
}

/// A charger heard from: (identity, heartbeat time, last-seen time).
type Touch<'a> = (&'a str, Option<DateTime<Utc>>, DateTime<Utc>);

/// The rows one batch writes, gathered from its charger writes so each kind
/// goes out in multi-row statements.
#[derive(Default)]
struct Batch<'a> {
    logs: Vec<&'a NewLogEntry>,
    /// (charger, heartbeat, seen), one per charger.
    touches: Vec<Touch<'a>>,
    connectors: Vec<&'a ConnectorStatus>,
    readings: Vec<&'a NewReading>,
    transactions: Vec<&'a TransactionRecord>,
    sessions: Vec<&'a SessionProgress>,
    corrections: Vec<&'a SessionProgress>,
    anomalies: Vec<&'a NewAnomaly>,
}

/// Keeps the last of several rows with the same key: one multi-row upsert
/// or update may not touch a row twice.
fn last_per_key<T, K: PartialEq>(rows: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let mut i = rows.len();
    while i > 0 {
        i -= 1;
        let k = key(&rows[i]);
        if rows[..i].iter().any(|r| key(r) == k) {
            // An earlier row has the same key: drop the earlier one(s).
            let mut j = 0;
            while j < i {
                if key(&rows[j]) == k {
                    rows.remove(j);
                    i -= 1;
                } else {
                    j += 1;
                }
            }
        }
    }
}

impl<'a> Batch<'a> {
    fn add(&mut self, w: &'a ChargerWrite) {
        if w.heartbeat.is_some() || w.seen.is_some() {
            let seen = w.heartbeat.or(w.seen).expect("one is set");
            self.touches.push((&w.charger_id, w.heartbeat, seen));
        }
        self.connectors.extend(&w.connector);
        self.readings.extend(&w.readings);
        self.transactions.extend(&w.transactions);
        self.sessions.extend(&w.sessions);
        self.corrections.extend(&w.corrections);
        self.anomalies.extend(&w.anomalies);
    }

    fn is_empty(&self) -> bool {
        self.logs.is_empty()
            && self.touches.is_empty()
            && self.connectors.is_empty()
            && self.readings.is_empty()
            && self.transactions.is_empty()
            && self.sessions.is_empty()
            && self.corrections.is_empty()
            && self.anomalies.is_empty()
    }

    /// Rows of one key written twice in a batch (only possible for writes
    /// nobody waits for, or a driver's write next to a charger's): the
    /// later one wins, as it would have one statement at a time.
    fn dedup(&mut self) {
        last_per_key(&mut self.touches, |t| t.0);
        last_per_key(&mut self.connectors, |c| {
            (c.charger_id.as_str(), c.connector_id)
        });
        last_per_key(&mut self.transactions, |t| t.id);
        last_per_key(&mut self.sessions, |s| s.session_id.as_str());
        last_per_key(&mut self.corrections, |s| s.session_id.as_str());
    }
}

/// A record read from a row by column name: the records derive
/// `sqlx::FromRow`, so one definition serves SQLite and PostgreSQL rows.
fn record<'r, R: sqlx::Row, T: sqlx::FromRow<'r, R>>(row: &'r R) -> Result<T> {
    Ok(T::from_row(row)?)
}

macro_rules! sql_store {
    ($Store:ident, $DB:ty, $Conn:ty, $Options:ty, $backend:literal, $migrations:literal, $begin_batch:literal) => {
        /// The
        #[doc = $backend]
        /// implementation of [`Store`].
        pub struct $Store {
            pub(in crate::store) pool: sqlx::Pool<$DB>,
            writer: Writer<WriteOp, WriteOut>,
            /// Log frames the writer holds back while the database refuses them.
            log_carried: std::sync::Arc<std::sync::atomic::AtomicUsize>,
            /// Why the last batch failed, until one succeeds.
            write_failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
            writer_metrics: super::WriterMetrics,
        }

        impl $Store {
            async fn migrate(pool: &sqlx::Pool<$DB>) -> Result<()> {
                sqlx::migrate!($migrations)
                    .run(pool)
                    .await
                    .context("running database migrations")
            }

            fn with(
                pool: sqlx::Pool<$DB>,
                write_options: $Options,
                catch_up: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
            ) -> Self {
                let log_carried = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let write_failure = std::sync::Arc::new(std::sync::Mutex::new(None));
                let writer_metrics = super::WriterMetrics::default();
                let writer = Self::start_writer(
                    write_options,
                    log_carried.clone(),
                    write_failure.clone(),
                    catch_up,
                    writer_metrics.clone(),
                );
                $Store {
                    pool,
                    writer,
                    log_carried,
                    write_failure,
                    writer_metrics,
                }
            }

            /// The group-commit writer: one task, one connection of its own
            /// (opened again whenever it failed), one transaction per batch.
            fn start_writer(
                options: $Options,
                log_carried: std::sync::Arc<std::sync::atomic::AtomicUsize>,
                write_failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
                catch_up: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
                metrics: super::WriterMetrics,
            ) -> Writer<WriteOp, WriteOut> {
                let (writer, mut queue) = Writer::channel(WRITE_QUEUE);
                // The writer runs on a thread and runtime of its own. On the
                // shared runtime it waited behind hundreds of ready charger
                // tasks every time a statement returned (milliseconds per
                // batch, measured), and the whole server waits on it.
                let work = async move {
                    let mut conn: Option<$Conn> = None;
                    let mut jobs = Vec::with_capacity(super::writer::MAX_BATCH);
                    let mut carried: Vec<NewLogEntry> = Vec::new();
                    while queue.next_batch(&mut jobs).await {
                        // SQLite: a checkpoint beside us just copied most of
                        // the log; copying the rest here, between batches,
                        // lets the next batch start the log file over.
                        let due = catch_up
                            .as_ref()
                            .is_some_and(|f| f.swap(false, std::sync::atomic::Ordering::Relaxed));
                        if let (true, Some(c)) = (due, conn.as_mut()) {
                            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                                .execute(c)
                                .await
                            {
                                tracing::warn!("WAL checkpoint failed: {e:#}");
                            }
                        }
                        let began = std::time::Instant::now();
                        let results =
                            Self::commit_batch(&options, &mut conn, &jobs, &mut carried).await;
                        metrics.batch(
                            jobs.len(),
                            began.elapsed(),
                            results.iter().any(|r| r.is_err()),
                        );
                        log_carried.store(carried.len(), std::sync::atomic::Ordering::Relaxed);
                        // A batch that only waited (a flush) proves nothing.
                        let wrote = jobs.iter().any(|j| !matches!(j.op, WriteOp::Barrier));
                        let failure = results
                            .iter()
                            .find_map(|r| r.as_ref().err())
                            .map(|e| format!("{e:#}"))
                            .or_else(|| {
                                (!carried.is_empty()).then(|| {
                                    format!(
                                        "{} message-log frames wait to be stored",
                                        carried.len()
                                    )
                                })
                            });
                        if wrote || failure.is_some() {
                            *write_failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
                        }
                        queue.answer(&mut jobs, results);
                    }
                };
                std::thread::Builder::new()
                    .name("csms-writer".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(runtime) => runtime.block_on(work),
                            Err(e) => tracing::error!("the database writer cannot start: {e}"),
                        }
                    })
                    .expect("spawning the database writer thread");
                writer
            }

            /// Commits a batch: all of it in one transaction when it can;
            /// when the database refuses a statement, write by write, so one
            /// bad write fails alone; when the database cannot be reached,
            /// every write fails at once (and the log frames wait).
            async fn commit_batch(
                options: &$Options,
                conn: &mut Option<$Conn>,
                jobs: &[Job<WriteOp, WriteOut>],
                carried: &mut Vec<NewLogEntry>,
            ) -> Vec<Result<WriteOut>> {
                let ops: Vec<&WriteOp> = jobs.iter().map(|j| &j.op).collect();
                let held = std::mem::take(carried);
                let first = Self::run_guarded(options, conn, &ops, &held).await;
                let e = match first {
                    Ok(results) => return results.into_iter().map(Ok).collect(),
                    Err(e) => e,
                };
                let logs = || {
                    held.iter()
                        .cloned()
                        .chain(ops.iter().filter_map(|op| match op {
                            WriteOp::Log(entry) => Some((**entry).clone()),
                            _ => None,
                        }))
                };
                if !refused_by_database(&e) || ops.len() == 1 {
                    tracing::error!("batch of {} writes failed: {e:#}", ops.len());
                    Self::carry(carried, logs());
                    let text = format!("{e:#}");
                    return ops
                        .iter()
                        .map(|op| match op {
                            WriteOp::Log(_) => Ok(WriteOut::Done),
                            _ => Err(anyhow!("write failed: {text}")),
                        })
                        .collect();
                }
                tracing::warn!(
                    "batch of {} writes refused ({e:#}); writing them one by one",
                    ops.len()
                );
                let mut results = Vec::with_capacity(ops.len());
                for op in &ops {
                    results.push(match op {
                        WriteOp::Log(_) => Ok(WriteOut::Done),
                        _ => Self::run_guarded(options, conn, &[*op], &[])
                            .await
                            .map(|mut r| r.remove(0)),
                    });
                }
                let pending: Vec<NewLogEntry> = logs().collect();
                let log_ops: Vec<WriteOp> = pending
                    .into_iter()
                    .map(|e| WriteOp::Log(Box::new(e)))
                    .collect();
                let refs: Vec<&WriteOp> = log_ops.iter().collect();
                if let Err(e) = Self::run_guarded(options, conn, &refs, &[]).await {
                    tracing::error!("{} message-log frames not stored yet: {e:#}", refs.len());
                    Self::carry(
                        carried,
                        log_ops.into_iter().filter_map(|op| match op {
                            WriteOp::Log(entry) => Some(*entry),
                            _ => None,
                        }),
                    );
                }
                results
            }

            fn carry(carried: &mut Vec<NewLogEntry>, more: impl Iterator<Item = NewLogEntry>) {
                carried.extend(more);
                if carried.len() > LOG_CARRY_MAX {
                    let drop = carried.len() - LOG_CARRY_MAX;
                    tracing::error!(
                        "{drop} message-log frames dropped: the database has refused them too long"
                    );
                    carried.drain(..drop);
                }
            }

            /// Runs ops in one transaction on the writer's connection, within
            /// [`BATCH_TIMEOUT`]. A failure drops the connection; the next
            /// batch opens another.
            async fn run_guarded(
                options: &$Options,
                conn: &mut Option<$Conn>,
                ops: &[&WriteOp],
                held_logs: &[NewLogEntry],
            ) -> Result<Vec<WriteOut>> {
                let run = async {
                    if conn.is_none() {
                        use sqlx::ConnectOptions;
                        let opened = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
                            .await
                            .map_err(|_| anyhow!("connecting to the database timed out"))?
                            .context("connecting to the database")?;
                        *conn = Some(opened);
                    }
                    let c = conn.as_mut().expect("opened above");
                    Self::run_ops(c, ops, held_logs).await
                };
                let result = match tokio::time::timeout(BATCH_TIMEOUT, run).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow!("a write batch took longer than {BATCH_TIMEOUT:?}")),
                };
                if result.is_err() {
                    // After a failed batch the connection's state is not to
                    // be trusted (a commit that failed half-way, SQLite
                    // keeping a file read-only after an I/O error): the next
                    // batch starts on a fresh one.
                    *conn = None;
                }
                result
            }

            async fn run_ops(
                c: &mut $Conn,
                ops: &[&WriteOp],
                held_logs: &[NewLogEntry],
            ) -> Result<Vec<WriteOut>> {
                use sqlx::Connection;
                let mut tx = c
                    .begin_with($begin_batch)
                    .await
                    .context("beginning a write batch")?;
                let mut batch = Batch::default();
                batch.logs.extend(held_logs);
                let mut results = Vec::with_capacity(ops.len());
                for op in ops {
                    match op {
                        WriteOp::Log(entry) => {
                            batch.logs.push(entry);
                            results.push(WriteOut::Done);
                        }
                        WriteOp::Charger(write) => {
                            batch.add(write);
                            results.push(WriteOut::Done);
                        }
                        WriteOp::Barrier => results.push(WriteOut::Done),
                        other => {
                            // Writes that read before they write see what the
                            // batch wrote before them.
                            Self::write_batch(&mut tx, &mut batch).await?;
                            results.push(Self::apply(&mut tx, other).await?);
                        }
                    }
                }
                Self::write_batch(&mut tx, &mut batch).await?;
                tx.commit().await.context("committing a write batch")?;
                Ok(results)
            }

            /// Writes what the batch gathered, one multi-row statement per
            /// chunk of each kind of row, and empties it (keeping its logs'
            /// borrow alive for the caller).
            async fn write_batch(c: &mut $Conn, batch: &mut Batch<'_>) -> Result<()> {
                if batch.is_empty() {
                    return Ok(());
                }
                batch.dedup();
                Self::write_rows(c, batch).await?;
                *batch = Batch::default();
                Ok(())
            }

            async fn apply(c: &mut $Conn, op: &WriteOp) -> Result<WriteOut> {
                Ok(match op {
                    WriteOp::Boot {
                        id,
                        info,
                        status_if_new,
                        at,
                    } => {
                        WriteOut::Registration(Self::boot(c, id, info, *status_if_new, *at).await?)
                    }
                    WriteOp::Start(tx, decide) => {
                        WriteOut::Started(Box::new(Self::start(c, tx, *decide).await?))
                    }
                    WriteOp::CreateSession(session) => {
                        WriteOut::SessionCreated(Self::create_session_in(c, session).await?)
                    }
                    WriteOp::SaveSession(session) => {
                        WriteOut::Saved(Self::save_session_in(c, session).await?)
                    }
                    WriteOp::DriverFields {
                        id,
                        battery_level,
                        station_rating,
                        at,
                    } => WriteOut::Saved(
                        Self::driver_fields_in(c, id, *battery_level, *station_rating, *at).await?,
                    ),
                    WriteOp::CancelSession { id, at, reason } => {
                        WriteOut::Saved(Self::cancel_in(c, id, *at, reason).await?)
                    }
                    WriteOp::Probe => {
                        sqlx::query(
                            "INSERT INTO settings (key, value) VALUES ('last_write_probe', $1) \
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        )
                        .bind(crate::ocpp::time::format_ms(chrono::Utc::now()))
                        .execute(&mut *c)
                        .await?;
                        WriteOut::Done
                    }
                    WriteOp::Charger(_) | WriteOp::Log(_) | WriteOp::Barrier => {
                        unreachable!("gathered into the batch")
                    }
                })
            }

            async fn write(&self, op: WriteOp) -> Result<WriteOut> {
                self.writer.write(op).await
            }
        }

        #[async_trait::async_trait]
        impl super::Store for $Store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn flush(&self) -> Result<()> {
                self.write(WriteOp::Barrier).await.map(|_| ())
            }

            async fn apply(&self, write: ChargerWrite) -> Result<()> {
                self.write(WriteOp::Charger(Box::new(write)))
                    .await
                    .map(|_| ())
            }

            fn write_failure(&self) -> Option<String> {
                self.write_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            }

            async fn probe_write(&self) -> Result<()> {
                self.write(WriteOp::Probe).await.map(|_| ())
            }

            fn writer_metrics(&self) -> super::WriterMetrics {
                self.writer_metrics.clone()
            }

            async fn figures(&self) -> Result<super::StoreFigures> {
                use sqlx::Row;
                let sessions = sqlx::query("SELECT status, count(*) AS n FROM sessions GROUP BY status ORDER BY status")
                    .fetch_all(&self.pool)
                    .await
                    .context("counting sessions")?;
                let energy: Option<f64> = sqlx::query_scalar("SELECT sum(energy_wh) FROM sessions WHERE status = 'completed'")
                    .fetch_one(&self.pool)
                    .await
                    .context("summing energy")?;
                let by_provider = |table: &'static str| {
                    let sql = format!("SELECT provider, status, count(*) AS n FROM {table} GROUP BY provider, status ORDER BY provider, status");
                    async move {
                        let rows = sqlx::query(&sql)
                            .fetch_all(&self.pool)
                            .await
                            .with_context(|| format!("counting {table}"))?;
                        rows.iter()
                            .map(|r| Ok((r.try_get("provider")?, r.try_get("status")?, r.try_get("n")?)))
                            .collect::<Result<Vec<(String, String, i64)>>>()
                    }
                };
                Ok(super::StoreFigures {
                    sessions_by_status: sessions
                        .iter()
                        .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
                        .collect::<Result<_>>()?,
                    completed_energy_wh: energy.unwrap_or(0.0),
                    payment_links: by_provider("payment_links").await?,
                    balance_checks: by_provider("balance_checks").await?,
                })
            }
        }

        chargers_sql!($Store, $DB, $Conn);
        transactions_sql!($Store, $DB, $Conn);
        sessions_sql!($Store, $DB, $Conn);
        people_sql!($Store, $DB, $Conn);
        log_sql!($Store, $DB, $Conn);
        webhooks_sql!($Store, $DB, $Conn);
        managed_sql!($Store, $DB, $Conn);
        sites_sql!($Store, $DB, $Conn);
        console_sql!($Store, $DB, $Conn);
    };
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteConnectOptions,
    "sqlite",
    "./migrations/sqlite",
    // IMMEDIATE takes the write lock up front. A deferred transaction that
    // reads before it writes fails at once (SQLITE_BUSY_SNAPSHOT, no waiting)
    // when another connection committed in between, as the API's writes may.
    "BEGIN IMMEDIATE"
);
sql_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::PgConnection,
    sqlx::postgres::PgConnectOptions,
    "postgres",
    "./migrations/postgres",
    "BEGIN"
);

impl SqliteStore {
    /// A batch's rows, one prepared statement per row on the writer's own
    /// thread (see [`sqlite_rows`]).
    async fn write_rows(c: &mut sqlx::SqliteConnection, batch: &Batch<'_>) -> Result<()> {
        sqlite_rows::write(c, batch).await
    }

    pub async fn open(url: &str) -> Result<Self> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        use std::str::FromStr;
        // WAL lets readers run beside the one writer; FULL makes a commit
        // durable across power loss, not just a killed process. Group commit
        // is what keeps FULL affordable. Checkpoints run off the commit path
        // (see `checkpoints`), never inside a charger's commit.
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("bad SQLite URL {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", "0")
            // Statement journals (a multi-row statement must be undoable on
            // its own) in memory, not in temporary files.
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening SQLite database {url}"))?;
        Self::migrate(&pool).await?;
        // The writer's pages stay cached between batches: an index page a
        // charger appends to is read once, not once per commit.
        let write_options = options.pragma("cache_size", "-65536");
        let catch_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(checkpoints(pool.clone(), catch_up.clone()));
        Ok(Self::with(pool, write_options, Some(catch_up)))
    }
}

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Log frames (pages) the writer may be left to copy itself.
const CATCH_UP_FRAMES: i64 = 512;

/// Copies the write-ahead log back into the database file, beside the
/// writer rather than inside one of its commits (a checkpoint in a commit
/// would hold every charger of that batch for it).
///
/// These PASSIVE checkpoints never wait for the writer, but under constant
/// writes they never finish at a moment the writer is not writing, and SQLite
/// starts the log file over only when a checkpoint is complete as a write
/// transaction begins: the file would grow without end (gigabytes a minute,
/// every page appended to a fresh part of it). So they run again at once
/// while much is left (each pass copies what was written during the one
/// before, so they converge), and once at most [`CATCH_UP_FRAMES`] are left
/// the writer is told (`catch_up`) to copy those itself between two
/// batches, which lets its next batch restart the log. The log file settles
/// at about a second of writes and is then reused, never grown. The
/// catch-up costs the writer 20-40 ms once a second on the development
/// machine (it ends in a sync of the growing database file): that, not the
/// writes, is what sets the open-loop p99.
async fn checkpoints(
    pool: sqlx::SqlitePool,
    catch_up: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use sqlx::Row;
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for _pass in 0..8 {
            if pool.is_closed() {
                return;
            }
            // (busy, frames in the log, frames copied back)
            // fetch_all, not fetch_one: a statement left unfinished holds
            // a read mark, and a read mark anywhere keeps SQLite from ever
            // starting the log over.
            let left = match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_all(&pool)
                .await
                .map(|mut rows| rows.remove(0))
            {
                Ok(row) => {
                    let log: i64 = row.try_get(1).unwrap_or(0);
                    let copied: i64 = row.try_get(2).unwrap_or(0);
                    log - copied
                }
                Err(e) => {
                    tracing::warn!("WAL checkpoint failed: {e:#}");
                    break;
                }
            };
            if left <= CATCH_UP_FRAMES {
                catch_up.store(true, std::sync::atomic::Ordering::Relaxed);
                break;
            }
        }
    }
}

impl PostgresStore {
    /// A batch's rows, in multi-row statements: a handful of round trips to
    /// the server per batch, whatever its size.
    async fn write_rows(c: &mut sqlx::PgConnection, batch: &Batch<'_>) -> Result<()> {
        Self::touch_chargers(c, &batch.touches).await?;
        Self::upsert_connectors(c, &batch.connectors).await?;
        Self::insert_readings(c, &batch.readings).await?;
        Self::save_transactions(c, &batch.transactions).await?;
        Self::progress_sessions(c, &batch.sessions, false).await?;
        Self::progress_sessions(c, &batch.corrections, true).await?;
        Self::insert_anomalies(c, &batch.anomalies).await?;
        Self::insert_log(c, &batch.logs).await
    }

    pub async fn open(url: &str) -> Result<Self> {
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        use std::str::FromStr;
        let options = PgConnectOptions::from_str(url).context("bad PostgreSQL URL")?;
        // A short acquire timeout: with the database down, a reader fails in
        // two seconds instead of holding a charger's answer for ten.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await
            .context("connecting to PostgreSQL")?;
        Self::migrate(&pool).await?;
        Ok(Self::with(pool, options, None))
    }
}
