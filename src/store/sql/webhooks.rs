//! The webhook outbox: events written by the database's own triggers (see
//! the `0006_webhooks` migrations), one delivery per event and receiver.

macro_rules! webhooks_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        #[async_trait::async_trait]
        impl super::WebhookStore for $Store {
            async fn enqueue_webhook_event(&self, kind: &str, data: &str, now_ms: i64) -> Result<()> {
                sqlx::query("INSERT INTO webhook_events (kind, data, created_ms) VALUES ($1, $2, $3)")
                    .bind(kind)
                    .bind(data)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await
                    .context("storing a webhook event")?;
                Ok(())
            }

            async fn dispatch_webhook_events(&self, urls: &[String], now_ms: i64, limit: i64) -> Result<usize> {
                use sqlx::Row;
                let mut tx = self.pool.begin().await?;
                let ids: Vec<i64> = sqlx::query("SELECT id FROM webhook_events WHERE dispatched = 0 ORDER BY id LIMIT $1")
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<i64, _>("id"))
                    .collect::<std::result::Result<_, _>>()?;
                for id in &ids {
                    for url in urls {
                        sqlx::query(
                            "INSERT INTO webhook_deliveries (event_id, url, next_attempt_ms) VALUES ($1, $2, $3) \
                             ON CONFLICT (event_id, url) DO NOTHING",
                        )
                        .bind(id)
                        .bind(url)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    }
                    // With no receiver, nobody will ever want it.
                    let done = if urls.is_empty() {
                        "DELETE FROM webhook_events WHERE id = $1"
                    } else {
                        "UPDATE webhook_events SET dispatched = 1 WHERE id = $1"
                    };
                    sqlx::query(done).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await.context("dispatching webhook events")?;
                Ok(ids.len())
            }

            async fn due_webhook_deliveries(&self, now_ms: i64, limit: i64) -> Result<Vec<super::DueDelivery>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT d.event_id, d.url, d.attempts, d.next_attempt_ms, e.kind, e.data, e.created_ms \
                     FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
                     WHERE d.delivered_ms IS NULL AND d.failed = 0 AND d.next_attempt_ms <= $1 \
                     ORDER BY d.next_attempt_ms, d.event_id LIMIT $2",
                )
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .context("reading due webhook deliveries")?;
                rows.iter()
                    .map(|r| {
                        Ok(super::DueDelivery {
                            event_id: r.try_get("event_id")?,
                            url: r.try_get("url")?,
                            attempts: r.try_get::<i32, _>("attempts")? as i64,
                            next_attempt_ms: r.try_get("next_attempt_ms")?,
                            kind: r.try_get("kind")?,
                            data: r.try_get("data")?,
                            created_ms: r.try_get("created_ms")?,
                        })
                    })
                    .collect()
            }

            async fn claim_webhook_delivery(&self, d: &super::DueDelivery, lease_until_ms: i64) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE webhook_deliveries SET next_attempt_ms = $1 \
                     WHERE event_id = $2 AND url = $3 AND next_attempt_ms = $4 \
                     AND delivered_ms IS NULL AND failed = 0",
                )
                .bind(lease_until_ms)
                .bind(d.event_id)
                .bind(&d.url)
                .bind(d.next_attempt_ms)
                .execute(&self.pool)
                .await
                .context("claiming a webhook delivery")?;
                Ok(done.rows_affected() == 1)
            }

            async fn prune_webhooks(&self, before_ms: i64) -> Result<u64> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE event_id IN ( \
                       SELECT id FROM webhook_events WHERE dispatched = 1 AND created_ms < $1 \
                       AND id NOT IN (SELECT event_id FROM webhook_deliveries WHERE delivered_ms IS NULL AND failed = 0))",
                )
                .bind(before_ms)
                .execute(&mut *tx)
                .await?;
                let gone = sqlx::query(
                    "DELETE FROM webhook_events WHERE dispatched = 1 AND created_ms < $1 \
                     AND id NOT IN (SELECT event_id FROM webhook_deliveries)",
                )
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await.context("pruning webhook events")?;
                Ok(gone)
            }

            async fn webhook_delivered(&self, event_id: i64, url: &str, at_ms: i64) -> Result<()> {
                sqlx::query(
                    "UPDATE webhook_deliveries SET delivered_ms = $1, attempts = attempts + 1, last_error = NULL \
                     WHERE event_id = $2 AND url = $3",
                )
                .bind(at_ms)
                .bind(event_id)
                .bind(url)
                .execute(&self.pool)
                .await
                .context("recording a webhook delivery")?;
                Ok(())
            }

            async fn webhook_attempt_failed(
                &self,
                event_id: i64,
                url: &str,
                attempts: i64,
                next_attempt_ms: Option<i64>,
                error: &str,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = $1, next_attempt_ms = COALESCE($2, next_attempt_ms), \
                     failed = $3, last_error = $4 WHERE event_id = $5 AND url = $6",
                )
                .bind(attempts as i32)
                .bind(next_attempt_ms)
                .bind(i32::from(next_attempt_ms.is_none()))
                .bind(error)
                .bind(event_id)
                .bind(url)
                .execute(&self.pool)
                .await
                .context("recording a failed webhook attempt")?;
                Ok(())
            }
        }
    };
}
