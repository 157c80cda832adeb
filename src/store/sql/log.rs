//! The message log (every frame in both directions) and the anomalies kept
//! for operators.

macro_rules! log_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        impl $Store {
            // The SQLite writer writes these rows one by one (`sqlite_rows`).
            #[allow(dead_code)]
            pub(super) async fn insert_log(c: &mut $Conn, entries: &[&NewLogEntry]) -> Result<()> {
                for chunk in chunked(entries) {
                    let mut q = sqlx::QueryBuilder::<$DB>::new(
                        "INSERT INTO ocpp_messages (charger_id, direction, message_type, message_id, action, payload, logged_at) ",
                    );
                    q.push_values(chunk, |mut row, e| {
                        row.push_bind(&e.charger_id)
                            .push_bind(e.direction.as_str())
                            .push_bind(e.message_type)
                            .push_bind(&e.message_id)
                            .push_bind(&e.action)
                            .push_bind(&e.payload)
                            .push_bind(e.logged_at);
                    });
                    q.build().execute(&mut *c).await.context("storing the message log")?;
                }
                Ok(())
            }

            pub(super) async fn insert_anomalies(c: &mut $Conn, anomalies: &[&NewAnomaly]) -> Result<()> {
                for chunk in chunked(anomalies) {
                    let mut q = sqlx::QueryBuilder::<$DB>::new(
                        "INSERT INTO anomalies (charger_id, transaction_id, kind, detail, occurred_at) ",
                    );
                    q.push_values(chunk, |mut row, a| {
                        row.push_bind(&a.charger_id)
                            .push_bind(a.transaction_id)
                            .push_bind(&a.kind)
                            .push_bind(a.detail.to_string())
                            .push_bind(a.occurred_at);
                    });
                    q.build().execute(&mut *c).await.context("storing anomalies")?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl super::LogStore for $Store {
            async fn log_message(&self, entry: NewLogEntry) {
                self.writer.write_detached(WriteOp::Log(Box::new(entry))).await;
            }

            fn log_lag(&self) -> usize {
                self.writer.detached_pending() + self.log_carried.load(std::sync::atomic::Ordering::Relaxed)
            }

            async fn messages(&self, charger_id: &str, page: super::Page) -> Result<super::Paged<LoggedMessage>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT * FROM ocpp_messages WHERE charger_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3")
                    .bind(charger_id)
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar("SELECT count(*) FROM ocpp_messages WHERE charger_id = $1")
                    .bind(charger_id)
                    .fetch_one(&self.pool)
                    .await?;
                let items = rows.iter()
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
                    .collect::<Result<_>>()?;
                Ok(super::Paged { items, total })
            }

            async fn record_anomaly(&self, anomaly: NewAnomaly) -> Result<()> {
                let mut write = ChargerWrite::new(&anomaly.charger_id);
                write.anomalies.push(anomaly);
                self.write(WriteOp::Charger(Box::new(write))).await.map(|_| ())
            }

            async fn anomalies(&self, charger_id: Option<&str>, limit: i64) -> Result<Vec<Anomaly>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT * FROM anomalies WHERE ($1 IS NULL OR charger_id = $1) ORDER BY id DESC LIMIT $2")
                    .bind(charger_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let detail: String = row.try_get("detail")?;
                        Ok(Anomaly {
                            id: row.try_get("id")?,
                            charger_id: row.try_get("charger_id")?,
                            transaction_id: row.try_get("transaction_id")?,
                            kind: row.try_get("kind")?,
                            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
                            occurred_at: row.try_get("occurred_at")?,
                        })
                    })
                    .collect()
            }
        }
    };
}
