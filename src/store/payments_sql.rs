//! The SQL of [`PaymentStore`], for both databases (same approach as
//! `sql.rs`). Payments are few next to meter values, so they write through
//! the pool in their own transactions rather than through group commit.
//!
//! Wallets never go below zero: every movement updates the running balance
//! of the wallets it touches (`wallet_balances`) in its own transaction, one
//! statement per wallet that changes the row and returns the result, and a
//! debit that leaves a wallet negative fails the whole transaction with
//! [`Overdraft`]. On PostgreSQL the statement locks the row, so a concurrent
//! movement waits for this one's commit and then sees its result; on SQLite
//! the transaction holds the write lock from its start (`BEGIN IMMEDIATE`).

use super::model::*;
use super::sql::{PostgresStore, SqliteStore};
use super::PaymentStore;
use crate::payments::ledger::{is_wallet_account, Overdraft};
use anyhow::{ensure, Context, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::collections::BTreeMap;

fn check_balanced(entries: &[LedgerEntry]) -> Result<()> {
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for e in entries {
        *sums.entry(e.currency.as_str()).or_default() += e.amount_minor;
    }
    ensure!(
        sums.values().all(|s| *s == 0),
        "ledger movement does not balance: {sums:?}"
    );
    Ok(())
}

macro_rules! payment_store {
    ($Store:ident, $DB:ty, $Conn:ty, $begin:literal) => {
        impl $Store {
            pub(super) fn check_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<BalanceCheckRecord> {
                let metadata: String = row.try_get("metadata")?;
                Ok(BalanceCheckRecord {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    wallet_address: row.try_get("wallet_address")?,
                    chain: row.try_get("chain")?,
                    currency: row.try_get("currency")?,
                    requested_amount_minor: row.try_get("requested_amount_minor")?,
                    actual_balance_minor: row.try_get("actual_balance_minor")?,
                    status: row.try_get("status")?,
                    provider: row.try_get("provider")?,
                    error_message: row.try_get("error_message")?,
                    metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
                    session_id: row.try_get("session_id")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            pub(super) fn link_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<PaymentLinkRecord> {
                let metadata: String = row.try_get("metadata")?;
                Ok(PaymentLinkRecord {
                    id: row.try_get("id")?,
                    session_id: row.try_get("session_id")?,
                    user_id: row.try_get("user_id")?,
                    provider: row.try_get("provider")?,
                    provider_ref: row.try_get("provider_ref")?,
                    url: row.try_get("url")?,
                    amount_minor: row.try_get("amount_minor")?,
                    currency: row.try_get("currency")?,
                    status: row.try_get("status")?,
                    metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
                    expires_at: row.try_get("expires_at")?,
                    paid_at: row.try_get("paid_at")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            /// Posts one balanced movement inside `c`'s transaction; false
            /// when a movement of this kind and reference exists already.
            /// Fails with [`Overdraft`] (and the caller's transaction must
            /// then be dropped, which rolls it back) when it would take a
            /// wallet below zero.
            async fn post(c: &mut $Conn, kind: &str, reference: &str, memo: &str, entries: &[LedgerEntry]) -> Result<bool> {
                check_balanced(entries)?;
                let id = uuid::Uuid::new_v4().to_string();
                let inserted = sqlx::query(
                    "INSERT INTO ledger_transactions (id, kind, reference, memo, created_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (kind, reference) DO NOTHING",
                )
                .bind(&id)
                .bind(kind)
                .bind(reference)
                .bind(memo)
                .bind(Utc::now())
                .execute(&mut *c)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Ok(false);
                }
                // Net change per wallet, in one order (the map's) for every
                // movement, so two movements never lock rows in opposite orders.
                let mut wallets: BTreeMap<(&str, &str), i64> = BTreeMap::new();
                for e in entries.iter().filter(|e| is_wallet_account(&e.account)) {
                    *wallets.entry((e.account.as_str(), e.currency.as_str())).or_default() += e.amount_minor;
                }
                for ((account, currency), change) in wallets {
                    let balance: i64 = sqlx::query_scalar(
                        "INSERT INTO wallet_balances (account, currency, balance_minor) VALUES ($1, $2, $3) \
                         ON CONFLICT (account, currency) DO UPDATE SET balance_minor = wallet_balances.balance_minor + excluded.balance_minor \
                         RETURNING balance_minor",
                    )
                    .bind(account)
                    .bind(currency)
                    .bind(change)
                    .fetch_one(&mut *c)
                    .await?;
                    // Only a debit is refused: a credit still lands on a
                    // wallet that went negative before this rule existed.
                    if change < 0 && balance < 0 {
                        return Err(Overdraft {
                            account: account.to_owned(),
                            currency: currency.to_owned(),
                            balance_minor: balance - change,
                            debit_minor: -change,
                        }
                        .into());
                    }
                }
                for e in entries {
                    sqlx::query("INSERT INTO ledger_entries (transaction_id, account, currency, amount_minor) VALUES ($1, $2, $3, $4)")
                        .bind(&id)
                        .bind(&e.account)
                        .bind(&e.currency)
                        .bind(e.amount_minor)
                        .execute(&mut *c)
                        .await?;
                }
                Ok(true)
            }
        }

        #[async_trait]
        impl PaymentStore for $Store {
            async fn ledger_post(&self, kind: &str, reference: &str, memo: &str, entries: &[LedgerEntry]) -> Result<bool> {
                let mut tx = self.pool.begin_with($begin).await?;
                let posted = Self::post(&mut tx, kind, reference, memo, entries).await?;
                tx.commit().await?;
                Ok(posted)
            }

            async fn ledger_balance(&self, account: &str, currency: &str) -> Result<i64> {
                let row = sqlx::query("SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM ledger_entries WHERE account = $1 AND currency = $2")
                    .bind(account)
                    .bind(currency)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
            }

            async fn ledger_accounts(&self, prefix: &str) -> Result<Vec<(String, String, i64)>> {
                let rows = sqlx::query(
                    "SELECT account, currency, CAST(SUM(amount_minor) AS BIGINT) AS balance FROM ledger_entries \
                     WHERE substr(account, 1, length($1)) = $1 GROUP BY account, currency ORDER BY account, currency",
                )
                .bind(prefix)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get::<Option<i64>, _>(2)?.unwrap_or(0)))).collect()
            }

            async fn insert_balance_check(&self, c: &BalanceCheckRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO balance_checks (id, user_id, wallet_address, chain, currency, requested_amount_minor, \
                         actual_balance_minor, status, provider, error_message, metadata, session_id, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(&c.id)
                .bind(&c.user_id)
                .bind(&c.wallet_address)
                .bind(&c.chain)
                .bind(&c.currency)
                .bind(c.requested_amount_minor)
                .bind(c.actual_balance_minor)
                .bind(&c.status)
                .bind(&c.provider)
                .bind(&c.error_message)
                .bind(c.metadata.to_string())
                .bind(&c.session_id)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn balance_check(&self, id: &str) -> Result<Option<BalanceCheckRecord>> {
                let row = sqlx::query("SELECT * FROM balance_checks WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::check_from_row).transpose()
            }

            async fn balance_checks_of_user(&self, user_id: &str) -> Result<Vec<BalanceCheckRecord>> {
                let rows = sqlx::query("SELECT * FROM balance_checks WHERE user_id = $1 ORDER BY created_at DESC, id")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::check_from_row).collect()
            }

            async fn attach_payment(&self, session_id: &str, payment: &SessionPayment) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query("UPDATE sessions SET wallet_address = $1, chain = $2, balance_check_id = $3, payment_due = $4 WHERE id = $5")
                    .bind(&payment.wallet_address)
                    .bind(&payment.chain)
                    .bind(&payment.balance_check_id)
                    .bind(payment.payment_due)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                if let Some(check) = &payment.balance_check_id {
                    sqlx::query("UPDATE balance_checks SET session_id = $1, updated_at = $2 WHERE id = $3")
                        .bind(session_id)
                        .bind(Utc::now())
                        .bind(check)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            // Times compare in SQL (see `overdue_remote_starts`).
            async fn sessions_with_payment_due(&self, unchanged_since: DateTime<Utc>) -> Result<Vec<String>> {
                let rows = sqlx::query("SELECT id FROM sessions WHERE payment_due = $1 AND status <> $2 AND updated_at <= $3")
                    .bind(true)
                    .bind(SESSION_ACTIVE)
                    .bind(unchanged_since)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
            }

            async fn settle_session_payment(
                &self,
                session_id: &str,
                release: Option<(&str, &[LedgerEntry])>,
                cost_override: Option<i64>,
                link: Option<&PaymentLinkRecord>,
            ) -> Result<bool> {
                let mut tx = self.pool.begin_with($begin).await?;
                // Whoever clears the flag does the work: a second caller (the
                // sweeper racing the stop endpoint) finds nothing to do.
                let claimed = sqlx::query("UPDATE sessions SET payment_due = $1 WHERE id = $2 AND payment_due = $3")
                    .bind(false)
                    .bind(session_id)
                    .bind(true)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed == 0 {
                    return Ok(false);
                }
                if let Some(cost) = cost_override {
                    sqlx::query("UPDATE sessions SET cost_minor = $1, updated_at = $2 WHERE id = $3")
                        .bind(cost)
                        .bind(Utc::now())
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some((reference, entries)) = release {
                    Self::post(&mut tx, "release", reference, "hold released at the end of the session", entries).await?;
                }
                if let Some(link) = link {
                    Self::insert_link(&mut tx, link).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn create_payment_link(&self, link: &PaymentLinkRecord, expire_first: Option<&str>) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                if let Some(old) = expire_first {
                    sqlx::query("UPDATE payment_links SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
                        .bind(LINK_EXPIRED)
                        .bind(Utc::now())
                        .bind(old)
                        .bind(LINK_PENDING)
                        .execute(&mut *tx)
                        .await?;
                }
                Self::insert_link(&mut tx, link).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn payment_link(&self, id: &str) -> Result<Option<PaymentLinkRecord>> {
                let row = sqlx::query("SELECT * FROM payment_links WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::link_from_row).transpose()
            }

            async fn payment_link_by_ref(&self, provider_ref: &str) -> Result<Option<PaymentLinkRecord>> {
                let row = sqlx::query("SELECT * FROM payment_links WHERE provider_ref = $1").bind(provider_ref).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::link_from_row).transpose()
            }

            async fn payment_links_of_session(&self, session_id: &str) -> Result<Vec<PaymentLinkRecord>> {
                let rows = sqlx::query("SELECT * FROM payment_links WHERE session_id = $1 ORDER BY created_at, id")
                    .bind(session_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::link_from_row).collect()
            }

            async fn pending_links_expired_by(&self, now: DateTime<Utc>) -> Result<Vec<PaymentLinkRecord>> {
                let rows = sqlx::query("SELECT * FROM payment_links WHERE status = $1 AND expires_at <= $2")
                    .bind(LINK_PENDING)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::link_from_row).collect()
            }

            async fn set_link_status(&self, id: &str, status: &str, at: DateTime<Utc>) -> Result<bool> {
                let changed = sqlx::query(
                    "UPDATE payment_links SET status = $1, paid_at = CASE WHEN $1 = 'paid' THEN $2 ELSE paid_at END, updated_at = $2 \
                     WHERE id = $3 AND status = $4",
                )
                .bind(status)
                .bind(at)
                .bind(id)
                .bind(LINK_PENDING)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(changed > 0)
            }

            async fn pay_link_from_ledger(&self, link_id: &str, reference: &str, entries: &[LedgerEntry], at: DateTime<Utc>) -> Result<bool> {
                let mut tx = self.pool.begin_with($begin).await?;
                let changed = sqlx::query("UPDATE payment_links SET status = $1, paid_at = $2, updated_at = $2 WHERE id = $3 AND status = $4")
                    .bind(LINK_PAID)
                    .bind(at)
                    .bind(link_id)
                    .bind(LINK_PENDING)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if changed == 0 {
                    return Ok(false);
                }
                // One settlement per session, whatever link it came through.
                let posted = Self::post(&mut tx, "settle", reference, "session paid from the prepaid wallet", entries).await?;
                ensure!(posted, "session {reference} was settled already");
                tx.commit().await?;
                Ok(true)
            }

            async fn record_stripe_event(&self, id: &str, kind: &str) -> Result<bool> {
                let inserted = sqlx::query("INSERT INTO stripe_events (id, type, received_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
                    .bind(id)
                    .bind(kind)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(inserted > 0)
            }
        }

        impl $Store {
            async fn insert_link(c: &mut $Conn, l: &PaymentLinkRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO payment_links (id, session_id, user_id, provider, provider_ref, url, amount_minor, currency, status, \
                         metadata, expires_at, paid_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(&l.id)
                .bind(&l.session_id)
                .bind(&l.user_id)
                .bind(&l.provider)
                .bind(&l.provider_ref)
                .bind(&l.url)
                .bind(l.amount_minor)
                .bind(&l.currency)
                .bind(&l.status)
                .bind(l.metadata.to_string())
                .bind(l.expires_at)
                .bind(l.paid_at)
                .bind(l.created_at)
                .bind(l.updated_at)
                .execute(&mut *c)
                .await
                .context("storing a payment link (a session has at most one live link)")?;
                Ok(())
            }
        }
    };
}

// SQLite: IMMEDIATE takes the write lock when the transaction begins, so a
// wallet's balance is read and changed under it, and a transaction never fails
// on a snapshot older than another connection's commit.
payment_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    "BEGIN IMMEDIATE"
);
payment_store!(PostgresStore, sqlx::Postgres, sqlx::PgConnection, "BEGIN");
