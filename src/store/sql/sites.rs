//! Sites and which chargers belong to them (migration 0010). What a site's
//! transactions are allowed is decided and kept by `engine::sites`; only the
//! configuration and the membership are stored.

macro_rules! sites_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        #[async_trait::async_trait]
        impl super::SiteStore for $Store {
            async fn upsert_site(&self, s: &SiteRecord) -> Result<SiteRecord> {
                let row = sqlx::query(
                    "INSERT INTO sites (id, name, unit, limit_value, phases, voltage, min_per_car, safe_default, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, unit = excluded.unit, limit_value = excluded.limit_value, \
                         phases = excluded.phases, voltage = excluded.voltage, min_per_car = excluded.min_per_car, \
                         safe_default = excluded.safe_default, updated_at = excluded.updated_at \
                     RETURNING *",
                )
                .bind(&s.id)
                .bind(&s.name)
                .bind(&s.unit)
                .bind(s.limit_value)
                .bind(s.phases)
                .bind(s.voltage)
                .bind(s.min_per_car)
                .bind(s.safe_default)
                .bind(s.created_at)
                .bind(s.updated_at)
                .fetch_one(&self.pool)
                .await
                .context("storing a site")?;
                record(&row)
            }

            async fn site(&self, id: &str) -> Result<Option<SiteRecord>> {
                let row = sqlx::query("SELECT * FROM sites WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn sites(&self) -> Result<Vec<SiteRecord>> {
                let rows = sqlx::query("SELECT * FROM sites ORDER BY id").fetch_all(&self.pool).await?;
                rows.iter().map(record).collect()
            }

            async fn delete_site(&self, id: &str) -> Result<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM site_chargers WHERE site_id = $1").bind(id).execute(&mut *tx).await?;
                let done = sqlx::query("DELETE FROM sites WHERE id = $1").bind(id).execute(&mut *tx).await?;
                tx.commit().await.context("deleting a site")?;
                Ok(done.rows_affected() == 1)
            }

            async fn site_chargers(&self) -> Result<Vec<SiteChargerRecord>> {
                let rows = sqlx::query("SELECT * FROM site_chargers ORDER BY site_id, charger_id").fetch_all(&self.pool).await?;
                rows.iter().map(record).collect()
            }

            async fn set_site_chargers(&self, site_id: &str, charger_ids: &[String], at: chrono::DateTime<chrono::Utc>) -> Result<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM site_chargers WHERE site_id = $1").bind(site_id).execute(&mut *tx).await?;
                for charger_id in charger_ids {
                    let added = sqlx::query("INSERT INTO site_chargers (charger_id, site_id, added_at) VALUES ($1, $2, $3)")
                        .bind(charger_id)
                        .bind(site_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await;
                    if let Err(e) = added {
                        let e = anyhow::Error::from(e);
                        // Another site took the charger meanwhile: nothing is changed.
                        return if super::is_unique_violation(&e) { Ok(false) } else { Err(e.context("adding a charger to a site")) };
                    }
                }
                tx.commit().await.context("storing a site's chargers")?;
                Ok(true)
            }
        }
    };
}
