//! Charging sessions. Every write is conditional on the session's status, so
//! a session is never completed, cancelled or billed twice, whichever of the
//! charger, the driver or a sweeper gets there first.

macro_rules! sessions_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        impl $Store {
            /// What a charger's figures change in its sessions: only active
            /// ones, or with `corrections`, ones a close completed and that
            /// have not been charged yet (no payment step done, no link).
            pub(super) async fn progress_sessions(c: &mut $Conn, rows: &[&SessionProgress], corrections: bool) -> Result<()> {
                let condition = if corrections {
                    // A transaction closed without its stop completed this
                    // session at its last reading; the real stop corrects it.
                    " AND sessions.status = 'completed' AND sessions.end_reason IN ('ConnectorAvailable', 'Superseded') \
                      AND (sessions.payment_due = TRUE OR sessions.wallet_address IS NULL) \
                      AND NOT EXISTS (SELECT 1 FROM payment_links WHERE payment_links.session_id = sessions.id)"
                } else {
                    " AND sessions.status = 'active'"
                };
                for chunk in chunked(rows) {
                    let mut q = sqlx::QueryBuilder::<$DB>::new(
                        "WITH v (id, energy_wh, cost_minor, last_reading_at, battery_level, battery_level_start, \
                             end_time, end_reason, updated_at) AS (",
                    );
                    q.push_values(chunk, |mut row, p| {
                        let (end_time, end_reason) = match &p.end {
                            Some((at, reason)) => (Some(*at), Some(reason.as_str())),
                            None => (None, None),
                        };
                        row.push_bind(&p.session_id)
                            .push_bind(p.energy_wh)
                            .push_bind(p.cost_minor)
                            .push_bind(p.last_reading_at)
                            .push_bind(p.battery_level)
                            .push_bind(p.battery_level_start)
                            .push_bind(end_time)
                            .push_bind(end_reason)
                            .push_bind(p.updated_at);
                    });
                    q.push(
                        ") UPDATE sessions SET energy_wh = v.energy_wh, energy_reported = TRUE, cost_minor = v.cost_minor, \
                             last_reading_at = COALESCE(v.last_reading_at, sessions.last_reading_at), \
                             battery_level = COALESCE(v.battery_level, sessions.battery_level), \
                             battery_level_start = COALESCE(sessions.battery_level_start, v.battery_level_start), \
                             status = CASE WHEN v.end_time IS NULL THEN sessions.status ELSE 'completed' END, \
                             end_time = COALESCE(v.end_time, sessions.end_time), \
                             end_reason = COALESCE(v.end_reason, sessions.end_reason), \
                             updated_at = v.updated_at \
                         FROM v WHERE sessions.id = v.id",
                    );
                    q.push(condition);
                    q.build().execute(&mut *c).await.context("updating sessions from their transactions")?;
                }
                Ok(())
            }

            pub(super) async fn insert_session(c: &mut $Conn, s: &SessionRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, station_id, station_name, connector_id, source, status, charger_id, \
                         ocpp_connector_id, transaction_id, id_tag, start_time, end_time, last_reading_at, battery_level_start, \
                         battery_level, energy_wh, energy_reported, price_micros, currency, cost_minor, battery_capacity_wh, \
                         station_rating, end_reason, remote_start_deadline, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
                         $22, $23, $24, $25, $26, $27)",
                )
                .bind(&s.id)
                .bind(&s.user_id)
                .bind(&s.station_id)
                .bind(&s.station_name)
                .bind(&s.connector_id)
                .bind(&s.source)
                .bind(&s.status)
                .bind(&s.charger_id)
                .bind(s.ocpp_connector_id)
                .bind(s.transaction_id)
                .bind(&s.id_tag)
                .bind(s.start_time)
                .bind(s.end_time)
                .bind(s.last_reading_at)
                .bind(s.battery_level_start)
                .bind(s.battery_level)
                .bind(s.energy_wh)
                .bind(s.energy_reported)
                .bind(s.price_micros)
                .bind(&s.currency)
                .bind(s.cost_minor)
                .bind(s.battery_capacity_wh)
                .bind(s.station_rating)
                .bind(&s.end_reason)
                .bind(s.remote_start_deadline)
                .bind(s.created_at)
                .bind(s.updated_at)
                .execute(&mut *c)
                .await?;
                Ok(())
            }

            /// Binds a waiting session to its transaction; false if it is no
            /// longer active (cancelled meanwhile).
            pub(super) async fn bind_session_in(c: &mut $Conn, s: &SessionRecord) -> Result<bool> {
                let bound = sqlx::query(
                    "UPDATE sessions SET transaction_id = $1, ocpp_connector_id = $2, connector_id = $3, start_time = $4, \
                         id_tag = $5, remote_start_deadline = NULL, updated_at = $6 WHERE id = $7 AND status = $8",
                )
                .bind(s.transaction_id)
                .bind(s.ocpp_connector_id)
                .bind(&s.connector_id)
                .bind(s.start_time)
                .bind(&s.id_tag)
                .bind(s.updated_at)
                .bind(&s.id)
                .bind(SESSION_ACTIVE)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(bound > 0)
            }

            pub(super) async fn cancel_in(
                c: &mut $Conn,
                id: &str,
                at: chrono::DateTime<chrono::Utc>,
                reason: &str,
            ) -> Result<bool> {
                let changed = sqlx::query(
                    "UPDATE sessions SET status = $1, end_time = $2, end_reason = $3, cost_minor = 0, updated_at = $4 \
                     WHERE id = $5 AND status = $6",
                )
                .bind(SESSION_CANCELLED)
                .bind(at)
                .bind(reason)
                .bind(chrono::Utc::now())
                .bind(id)
                .bind(SESSION_ACTIVE)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(changed > 0)
            }

            pub(super) async fn create_session_in(
                c: &mut $Conn,
                s: &SessionRecord,
            ) -> Result<std::result::Result<(), SessionConflict>> {
                let user_busy = sqlx::query("SELECT id FROM sessions WHERE user_id = $1 AND status = $2")
                    .bind(&s.user_id)
                    .bind(SESSION_ACTIVE)
                    .fetch_optional(&mut *c)
                    .await?;
                if user_busy.is_some() {
                    return Ok(Err(SessionConflict::UserHasActiveSession));
                }
                let connector_busy = sqlx::query("SELECT id FROM sessions WHERE station_id = $1 AND connector_id = $2 AND status = $3")
                    .bind(&s.station_id)
                    .bind(&s.connector_id)
                    .bind(SESSION_ACTIVE)
                    .fetch_optional(&mut *c)
                    .await?;
                if connector_busy.is_some() {
                    return Ok(Err(SessionConflict::ConnectorBusy));
                }
                Self::insert_session(c, s).await?;
                Ok(Ok(()))
            }

            pub(super) async fn save_session_in(c: &mut $Conn, s: &SessionRecord) -> Result<bool> {
                let changed = sqlx::query(
                    "UPDATE sessions SET status = $1, end_time = $2, last_reading_at = $3, battery_level_start = $4, \
                         battery_level = $5, energy_wh = $6, energy_reported = $7, cost_minor = $8, station_rating = $9, \
                         end_reason = $10, updated_at = $11 WHERE id = $12 AND status = $13",
                )
                .bind(&s.status)
                .bind(s.end_time)
                .bind(s.last_reading_at)
                .bind(s.battery_level_start)
                .bind(s.battery_level)
                .bind(s.energy_wh)
                .bind(s.energy_reported)
                .bind(s.cost_minor)
                .bind(s.station_rating)
                .bind(&s.end_reason)
                .bind(s.updated_at)
                .bind(&s.id)
                .bind(SESSION_ACTIVE)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(changed > 0)
            }

            pub(super) async fn driver_fields_in(
                c: &mut $Conn,
                id: &str,
                battery_level: Option<f64>,
                station_rating: Option<i64>,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool> {
                let changed = sqlx::query(
                    "UPDATE sessions SET battery_level = COALESCE($1, battery_level), \
                         station_rating = COALESCE($2, station_rating), updated_at = $3 WHERE id = $4 AND status = $5",
                )
                .bind(battery_level)
                .bind(station_rating)
                .bind(at)
                .bind(id)
                .bind(SESSION_ACTIVE)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(changed > 0)
            }

            pub(super) async fn session_of_transaction_in(c: &mut $Conn, transaction_id: i64) -> Result<Option<SessionRecord>> {
                let row = sqlx::query("SELECT * FROM sessions WHERE transaction_id = $1")
                    .bind(transaction_id)
                    .fetch_optional(&mut *c)
                    .await?;
                row.as_ref().map(record).transpose()
            }
        }

        #[async_trait::async_trait]
        impl super::SessionStore for $Store {
            async fn create_session(&self, session: SessionRecord) -> Result<std::result::Result<(), SessionConflict>> {
                match self.write(WriteOp::CreateSession(Box::new(session))).await? {
                    WriteOut::SessionCreated(outcome) => Ok(outcome),
                    _ => unreachable!("a session write answers with its outcome"),
                }
            }

            async fn save_session(&self, session: SessionRecord) -> Result<bool> {
                match self.write(WriteOp::SaveSession(Box::new(session))).await? {
                    WriteOut::Saved(changed) => Ok(changed),
                    _ => unreachable!("a session save answers whether it changed anything"),
                }
            }

            async fn save_driver_fields(&self, session_id: &str, battery_level: Option<f64>, station_rating: Option<i64>) -> Result<bool> {
                let op = WriteOp::DriverFields { id: session_id.to_owned(), battery_level, station_rating, at: chrono::Utc::now() };
                match self.write(op).await? {
                    WriteOut::Saved(changed) => Ok(changed),
                    _ => unreachable!("a session save answers whether it changed anything"),
                }
            }

            async fn cancel_session(&self, session_id: &str, at: chrono::DateTime<chrono::Utc>, reason: &str) -> Result<bool> {
                let op = WriteOp::CancelSession { id: session_id.to_owned(), at, reason: reason.to_owned() };
                match self.write(op).await? {
                    WriteOut::Saved(changed) => Ok(changed),
                    _ => unreachable!("a session cancel answers whether it changed anything"),
                }
            }

            async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
                let row = sqlx::query("SELECT * FROM sessions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn session_of_transaction(&self, transaction_id: i64) -> Result<Option<SessionRecord>> {
                let row = sqlx::query("SELECT * FROM sessions WHERE transaction_id = $1")
                    .bind(transaction_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(record).transpose()
            }

            async fn active_session(&self, user_id: &str) -> Result<Option<SessionRecord>> {
                let row = sqlx::query("SELECT * FROM sessions WHERE user_id = $1 AND status = $2")
                    .bind(user_id)
                    .bind(SESSION_ACTIVE)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(record).transpose()
            }

            async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>> {
                let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = $1 ORDER BY start_time DESC, created_at DESC")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect()
            }

            async fn user_sessions_page(
                &self,
                user_id: &str,
                since: Option<chrono::DateTime<chrono::Utc>>,
                page: super::Page,
            ) -> Result<super::Paged<SessionRecord>> {
                // `sessions_by_user (user_id, start_time)` serves both.
                let rows = sqlx::query(
                    "SELECT * FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR start_time >= $2) \
                     ORDER BY start_time DESC, created_at DESC LIMIT $3 OFFSET $4",
                )
                .bind(user_id)
                .bind(since)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR start_time >= $2)",
                )
                .bind(user_id)
                .bind(since)
                .fetch_one(&self.pool)
                .await?;
                Ok(super::Paged {
                    items: rows.iter().map(record).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn active_sessions(&self) -> Result<Vec<SessionRecord>> {
                let rows = sqlx::query("SELECT * FROM sessions WHERE status = $1 ORDER BY created_at")
                    .bind(SESSION_ACTIVE)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect()
            }

            // Times compare in SQL on both databases: TIMESTAMPTZ on
            // PostgreSQL; on SQLite, text that sqlx and the writer both write
            // as RFC 3339 in UTC (`+00:00`, no fraction or 3, 6 or 9 digits),
            // whose byte order is time order, and `now` is bound the same way.
            async fn overdue_remote_starts(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<SessionRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM sessions WHERE status = $1 AND transaction_id IS NULL \
                     AND remote_start_deadline <= $2 ORDER BY created_at",
                )
                .bind(SESSION_ACTIVE)
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(record).collect()
            }
        }
    };
}
