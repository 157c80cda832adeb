//! What the operator console lists across aggregates: every session,
//! payment link, balance check and ledger entry paged in the database (one
//! page query and one count, on indexes from migration 0009), a
//! transaction's anomalies and the frames logged while it ran.

macro_rules! console_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        impl $Store {
            /// A page of `table` (payment links, balance checks) with an
            /// optional status and user, newest first, and how many match.
            async fn by_status_and_user(
                &self,
                table: &str,
                status: Option<&str>,
                user_id: Option<&str>,
                page: super::Page,
            ) -> Result<(Vec<<$DB as sqlx::Database>::Row>, i64)> {
                let matching = format!("FROM {table} WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR user_id = $2)");
                let rows = sqlx::query(&format!(
                    "SELECT * {matching} ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
                ))
                .bind(status)
                .bind(user_id)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) {matching}"))
                    .bind(status)
                    .bind(user_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((rows, total))
            }

            fn anomaly_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<Anomaly> {
                use sqlx::Row;
                let detail: String = row.try_get("detail")?;
                Ok(Anomaly {
                    id: row.try_get("id")?,
                    charger_id: row.try_get("charger_id")?,
                    transaction_id: row.try_get("transaction_id")?,
                    kind: row.try_get("kind")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
                    occurred_at: row.try_get("occurred_at")?,
                })
            }
        }

        #[async_trait::async_trait]
        impl super::ConsoleStore for $Store {
            async fn sessions_page(&self, q: &super::SessionQuery, page: super::Page) -> Result<super::Paged<SessionRecord>> {
                const MATCH: &str = "($1 IS NULL OR status = $1) AND ($2 IS NULL OR charger_id = $2) \
                     AND ($3 IS NULL OR user_id = $3) \
                     AND ($4 IS NULL OR lower(station_id) LIKE $4 ESCAPE '\\' OR lower(station_name) LIKE $4 ESCAPE '\\' \
                          OR lower(user_id) LIKE $4 ESCAPE '\\' OR lower(id_tag) LIKE $4 ESCAPE '\\') \
                     AND ($5 IS NULL OR start_time >= $5) AND ($6 IS NULL OR start_time < $6)";
                let rows = sqlx::query(&format!(
                    "SELECT * FROM sessions WHERE {MATCH} ORDER BY start_time DESC, id LIMIT $7 OFFSET $8"
                ))
                .bind(&q.status)
                .bind(&q.charger_id)
                .bind(&q.user_id)
                .bind(&q.search)
                .bind(q.from)
                .bind(q.to)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM sessions WHERE {MATCH}"))
                    .bind(&q.status)
                    .bind(&q.charger_id)
                    .bind(&q.user_id)
                    .bind(&q.search)
                    .bind(q.from)
                    .bind(q.to)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(super::Paged {
                    items: rows.iter().map(record).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn payment_links_page(
                &self,
                status: Option<&str>,
                user_id: Option<&str>,
                page: super::Page,
            ) -> Result<super::Paged<PaymentLinkRecord>> {
                let (rows, total) = self
                    .by_status_and_user("payment_links", status, user_id, page)
                    .await?;
                Ok(super::Paged {
                    items: rows.iter().map(Self::link_from_row).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn balance_checks_page(
                &self,
                status: Option<&str>,
                user_id: Option<&str>,
                page: super::Page,
            ) -> Result<super::Paged<BalanceCheckRecord>> {
                let (rows, total) = self
                    .by_status_and_user("balance_checks", status, user_id, page)
                    .await?;
                Ok(super::Paged {
                    items: rows.iter().map(Self::check_from_row).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn ledger_movements(&self, user_id: &str, page: super::Page) -> Result<super::Paged<super::LedgerMovement>> {
                use sqlx::Row;
                const MATCH: &str = "(substr(e.account, 1, length($1)) = $1 OR substr(e.account, 1, length($2)) = $2)";
                let (wallets, holds) = (format!("wallet:{user_id}:"), format!("hold:{user_id}:"));
                let rows = sqlx::query(&format!(
                    "SELECT e.id AS entry_id, t.id AS movement_id, t.kind, t.reference, t.memo, e.account, e.currency, \
                         e.amount_minor, t.created_at \
                     FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id \
                     WHERE {MATCH} ORDER BY e.id DESC LIMIT $3 OFFSET $4"
                ))
                .bind(&wallets)
                .bind(&holds)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ledger_entries e WHERE {MATCH}"))
                    .bind(&wallets)
                    .bind(&holds)
                    .fetch_one(&self.pool)
                    .await?;
                let items = rows
                    .iter()
                    .map(|r| {
                        Ok(super::LedgerMovement {
                            entry_id: r.try_get("entry_id")?,
                            movement_id: r.try_get("movement_id")?,
                            kind: r.try_get("kind")?,
                            reference: r.try_get("reference")?,
                            memo: r.try_get("memo")?,
                            account: r.try_get("account")?,
                            currency: r.try_get("currency")?,
                            amount_minor: r.try_get("amount_minor")?,
                            created_at: r.try_get("created_at")?,
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(super::Paged { items, total })
            }

            async fn anomalies_page(
                &self,
                charger_id: Option<&str>,
                transaction_id: Option<i64>,
                page: super::Page,
            ) -> Result<super::Paged<Anomaly>> {
                const MATCH: &str = "($1 IS NULL OR charger_id = $1) AND ($2 IS NULL OR transaction_id = $2)";
                let rows = sqlx::query(&format!("SELECT * FROM anomalies WHERE {MATCH} ORDER BY id DESC LIMIT $3 OFFSET $4"))
                    .bind(charger_id)
                    .bind(transaction_id)
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM anomalies WHERE {MATCH}"))
                    .bind(charger_id)
                    .bind(transaction_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(super::Paged {
                    items: rows.iter().map(Self::anomaly_from_row).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn messages_between(
                &self,
                charger_id: &str,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<LoggedMessage>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT * FROM ocpp_messages WHERE charger_id = $1 AND logged_at >= $2 AND logged_at <= $3 \
                     ORDER BY id LIMIT $4",
                )
                .bind(charger_id)
                .bind(from)
                .bind(to)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(LoggedMessage {
                            id: row.try_get("id")?,
                            charger_id: row.try_get("charger_id")?,
                            direction: row.try_get("direction")?,
                            message_type: row.try_get("message_type")?,
                            message_id: row.try_get("message_id")?,
                            action: row.try_get("action")?,
                            payload: row.try_get("payload")?,
                            logged_at: row.try_get("logged_at")?,
                        })
                    })
                    .collect()
            }
        }
    };
}
