//! Reservations, charging profiles and local authorization lists.
//! Reservation writes are conditional on the reservation still being live
//! (`pending` or `accepted`), so the charger's answer, a cancellation, the
//! expiry sweeper and a StartTransaction that uses it never overwrite one
//! another's outcome.

macro_rules! managed_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        impl $Store {
            /// Marks a live reservation used by a transaction, inside the
            /// StartTransaction's write. False when it was no longer live.
            pub(super) async fn use_reservation_in(c: &mut $Conn, id: i64, transaction_id: i64, at: chrono::DateTime<chrono::Utc>) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE reservations SET status = 'used', transaction_id = $1, updated_at = $2 \
                     WHERE id = $3 AND status IN ('pending', 'accepted')",
                )
                .bind(transaction_id)
                .bind(at)
                .bind(id)
                .execute(&mut *c)
                .await
                .context("marking a reservation used")?;
                Ok(done.rows_affected() == 1)
            }

            pub(super) async fn reservation_in(c: &mut $Conn, id: i64) -> Result<Option<ReservationRecord>> {
                let row = sqlx::query("SELECT * FROM reservations WHERE id = $1").bind(id).fetch_optional(&mut *c).await?;
                row.as_ref().map(record).transpose()
            }
        }

        #[async_trait::async_trait]
        impl super::ManagedStore for $Store {
            async fn insert_reservation(&self, r: &NewReservation) -> Result<Option<ReservationRecord>> {
                let row = sqlx::query(
                    "INSERT INTO reservations (charger_id, connector_id, id_tag, parent_id_tag, user_id, expiry_date, status, \
                         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING *",
                )
                .bind(&r.charger_id)
                .bind(r.connector_id)
                .bind(&r.id_tag)
                .bind(&r.parent_id_tag)
                .bind(&r.user_id)
                .bind(r.expiry_date)
                .bind(r.created_at)
                .fetch_one(&self.pool)
                .await;
                match row {
                    Ok(row) => Ok(Some(record(&row)?)),
                    Err(e) => {
                        let e = anyhow::Error::from(e);
                        if super::is_unique_violation(&e) {
                            Ok(None)
                        } else {
                            Err(e.context("storing a reservation"))
                        }
                    }
                }
            }

            async fn reservation(&self, id: i64) -> Result<Option<ReservationRecord>> {
                let row = sqlx::query("SELECT * FROM reservations WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn reservations_page(
                &self,
                charger_id: Option<&str>,
                user_id: Option<&str>,
                status: Option<&str>,
                page: super::Page,
            ) -> Result<super::Paged<ReservationRecord>> {
                const WHERE: &str = "WHERE ($1 IS NULL OR charger_id = $1) AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR status = $3)";
                let rows = sqlx::query(&format!("SELECT * FROM reservations {WHERE} ORDER BY id DESC LIMIT $4 OFFSET $5"))
                    .bind(charger_id)
                    .bind(user_id)
                    .bind(status)
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM reservations {WHERE}"))
                    .bind(charger_id)
                    .bind(user_id)
                    .bind(status)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(super::Paged {
                    items: rows.iter().map(record).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn end_live_reservation(&self, id: i64, status: &str, at: chrono::DateTime<chrono::Utc>) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE reservations SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ('pending', 'accepted')",
                )
                .bind(status)
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await
                .context("updating a reservation")?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_pending_reservation(&self, id: i64) -> Result<bool> {
                let done = sqlx::query("DELETE FROM reservations WHERE id = $1 AND status = 'pending'")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .context("deleting a reservation")?;
                Ok(done.rows_affected() == 1)
            }

            async fn live_reservations_expired_by(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<ReservationRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM reservations WHERE status IN ('pending', 'accepted') AND expiry_date <= $1 ORDER BY expiry_date, id",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(record).collect()
            }

            async fn upsert_charging_profile(&self, p: &NewChargingProfile) -> Result<ChargingProfileRecord> {
                let row = sqlx::query(
                    "INSERT INTO charging_profiles (charger_id, connector_id, purpose, stack_level, transaction_id, profile, status, \
                         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) \
                     ON CONFLICT (charger_id, connector_id, purpose, stack_level) DO UPDATE SET \
                         transaction_id = excluded.transaction_id, profile = excluded.profile, status = 'pending', \
                         last_error = NULL, sent_at = NULL, answered_at = NULL, updated_at = excluded.updated_at \
                     RETURNING *",
                )
                .bind(&p.charger_id)
                .bind(p.connector_id)
                .bind(&p.purpose)
                .bind(p.stack_level)
                .bind(p.transaction_id)
                .bind(&p.profile)
                .bind(p.at)
                .fetch_one(&self.pool)
                .await
                .context("storing a charging profile")?;
                record(&row)
            }

            async fn charging_profile(&self, id: i64) -> Result<Option<ChargingProfileRecord>> {
                let row = sqlx::query("SELECT * FROM charging_profiles WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn charging_profiles_of(&self, charger_id: &str) -> Result<Vec<ChargingProfileRecord>> {
                let rows = sqlx::query("SELECT * FROM charging_profiles WHERE charger_id = $1 ORDER BY id")
                    .bind(charger_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect()
            }

            async fn set_profile_answer(&self, id: i64, profile: &str, answer: &ProfileAnswer) -> Result<bool> {
                // Only if the profile is still the one sent: a replacement
                // stored meanwhile waits for its own answer.
                let done = sqlx::query(
                    "UPDATE charging_profiles SET status = $1, last_error = $2, sent_at = $3, answered_at = $4, updated_at = $5 \
                     WHERE id = $6 AND profile = $7",
                )
                .bind(&answer.status)
                .bind(&answer.last_error)
                .bind(answer.sent_at)
                .bind(answer.answered_at)
                .bind(answer.answered_at.unwrap_or(answer.sent_at))
                .bind(id)
                .bind(profile)
                .execute(&self.pool)
                .await
                .context("storing a charger's answer to a charging profile")?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_charging_profile(&self, id: i64) -> Result<bool> {
                let done = sqlx::query("DELETE FROM charging_profiles WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .context("deleting a charging profile")?;
                Ok(done.rows_affected() == 1)
            }

            async fn local_list(&self, charger_id: &str) -> Result<Option<LocalListRecord>> {
                let row = sqlx::query("SELECT * FROM local_lists WHERE charger_id = $1").bind(charger_id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn local_lists_page(&self, page: super::Page) -> Result<super::Paged<LocalListRecord>> {
                let rows = sqlx::query("SELECT * FROM local_lists ORDER BY charger_id LIMIT $1 OFFSET $2")
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar("SELECT count(*) FROM local_lists").fetch_one(&self.pool).await?;
                Ok(super::Paged {
                    items: rows.iter().map(record).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn enabled_local_lists(&self) -> Result<Vec<LocalListRecord>> {
                let rows = sqlx::query("SELECT * FROM local_lists WHERE enabled = 1 ORDER BY charger_id")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect()
            }

            async fn save_local_list(&self, l: &LocalListRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO local_lists (charger_id, enabled, max_length, version, entries, sync_state, last_error, synced_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (charger_id) DO UPDATE SET enabled = excluded.enabled, max_length = excluded.max_length, \
                         version = excluded.version, entries = excluded.entries, sync_state = excluded.sync_state, \
                         last_error = excluded.last_error, synced_at = excluded.synced_at, updated_at = excluded.updated_at",
                )
                .bind(&l.charger_id)
                .bind(l.enabled)
                .bind(l.max_length)
                .bind(l.version)
                .bind(&l.entries)
                .bind(&l.sync_state)
                .bind(&l.last_error)
                .bind(l.synced_at)
                .bind(l.updated_at)
                .execute(&self.pool)
                .await
                .context("storing a local list")?;
                Ok(())
            }

            async fn local_list_tags(&self, limit: i64) -> Result<Vec<IdTagRecord>> {
                let rows = sqlx::query("SELECT * FROM id_tags WHERE user_id IS NOT NULL ORDER BY upper(id_tag) LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect()
            }
        }
    };
}
