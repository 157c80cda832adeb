//! Users, idTags, stations and settings.

macro_rules! people_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        #[async_trait::async_trait]
        impl super::PeopleStore for $Store {
            async fn setting(&self, key: &str) -> Result<Option<String>> {
                use sqlx::Row;
                let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
                Ok(match row {
                    Some(r) => Some(r.try_get(0)?),
                    None => None,
                })
            }

            async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                self.setting(key).await?.context("setting vanished after insert")
            }

            async fn upsert_user(&self, u: &UserRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO users (id, email, name, role, password_hash, battery_capacity_wh, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name, role = excluded.role, \
                         password_hash = COALESCE(excluded.password_hash, users.password_hash), \
                         battery_capacity_wh = COALESCE(excluded.battery_capacity_wh, users.battery_capacity_wh)",
                )
                .bind(&u.id)
                .bind(&u.email)
                .bind(&u.name)
                .bind(&u.role)
                .bind(&u.password_hash)
                .bind(u.battery_capacity_wh)
                .bind(u.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn user(&self, id: &str) -> Result<Option<UserRecord>> {
                let row = sqlx::query("SELECT * FROM users WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
                let row = sqlx::query("SELECT * FROM users WHERE email = $1").bind(email).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn users_page(&self, search: Option<&str>, page: super::Page) -> Result<super::Paged<UserRecord>> {
                const MATCH: &str = "($1 IS NULL OR lower(id) LIKE $1 ESCAPE '\\' OR lower(name) LIKE $1 ESCAPE '\\' \
                                     OR lower(email) LIKE $1 ESCAPE '\\')";
                let rows = sqlx::query(&format!("SELECT * FROM users WHERE {MATCH} ORDER BY created_at, id LIMIT $2 OFFSET $3"))
                    .bind(search)
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM users WHERE {MATCH}"))
                    .bind(search)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(super::Paged {
                    items: rows.iter().map(record).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn station_ids_page(&self, search: Option<&str>, page: super::Page) -> Result<super::Paged<String>> {
                const IDS: &str = "SELECT id FROM stations UNION SELECT id FROM chargers";
                const MATCH: &str = "($1 IS NULL OR lower(id) LIKE $1 ESCAPE '\\' \
                                     OR id IN (SELECT id FROM stations WHERE lower(name) LIKE $1 ESCAPE '\\'))";
                let items: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT id FROM ({IDS}) AS ids WHERE {MATCH} ORDER BY id LIMIT $2 OFFSET $3"
                ))
                .bind(search)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({IDS}) AS ids WHERE {MATCH}"))
                    .bind(search)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(super::Paged { items, total })
            }

            async fn ensure_user(&self, id: &str) -> Result<()> {
                sqlx::query("INSERT INTO users (id, name, role, created_at) VALUES ($1, '', 'driver', $2) ON CONFLICT (id) DO NOTHING")
                    .bind(id)
                    .bind(chrono::Utc::now())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn upsert_id_tag(&self, t: &IdTagRecord) -> Result<()> {
                // The same tag in another case is this tag: it keeps the
                // spelling it was first entered with. The unique index on
                // upper(id_tag) settles two requests racing to create it.
                let updated = sqlx::query(
                    "UPDATE id_tags SET user_id = $1, status = $2, expiry_date = $3, parent_id_tag = $4 \
                     WHERE upper(id_tag) = upper($5)",
                )
                .bind(&t.user_id)
                .bind(&t.status)
                .bind(t.expiry_date)
                .bind(&t.parent_id_tag)
                .bind(&t.id_tag)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if updated == 0 {
                    sqlx::query(
                        "INSERT INTO id_tags (id_tag, user_id, status, expiry_date, parent_id_tag, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&t.id_tag)
                    .bind(&t.user_id)
                    .bind(&t.status)
                    .bind(t.expiry_date)
                    .bind(&t.parent_id_tag)
                    .bind(t.created_at)
                    .execute(&self.pool)
                    .await?;
                }
                Ok(())
            }

            async fn id_tag(&self, id_tag: &str) -> Result<Option<IdTagRecord>> {
                let row = sqlx::query("SELECT * FROM id_tags WHERE upper(id_tag) = upper($1)")
                    .bind(id_tag.trim())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(record).transpose()
            }

            async fn id_tags_of_user(&self, user_id: &str) -> Result<Vec<IdTagRecord>> {
                let rows = sqlx::query("SELECT * FROM id_tags WHERE user_id = $1 ORDER BY created_at, id_tag")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect()
            }

            async fn id_tags_page(&self, user_id: Option<&str>, search: Option<&str>, page: super::Page) -> Result<super::Paged<IdTagRecord>> {
                const MATCH: &str = "($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR lower(id_tag) LIKE $2 ESCAPE '\\')";
                let rows = sqlx::query(&format!("SELECT * FROM id_tags WHERE {MATCH} ORDER BY id_tag LIMIT $3 OFFSET $4"))
                    .bind(user_id)
                    .bind(search)
                    .bind(page.limit)
                    .bind(page.offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM id_tags WHERE {MATCH}"))
                    .bind(user_id)
                    .bind(search)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(super::Paged {
                    items: rows.iter().map(record).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn station(&self, id: &str) -> Result<Option<StationRecord>> {
                let row = sqlx::query("SELECT * FROM stations WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn upsert_station(&self, st: &StationRecord) -> Result<StationRecord> {
                let row = sqlx::query(
                    "INSERT INTO stations (id, name, price_micros, currency, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_micros = excluded.price_micros, \
                         currency = excluded.currency, updated_at = excluded.updated_at RETURNING *",
                )
                .bind(&st.id)
                .bind(&st.name)
                .bind(st.price_micros)
                .bind(&st.currency)
                .bind(st.updated_at)
                .fetch_one(&self.pool)
                .await?;
                record(&row)
            }
        }
    };
}
