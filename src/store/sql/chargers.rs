//! Chargers (registration, boot details, liveness) and their connectors.

macro_rules! chargers_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        impl $Store {
            pub(super) async fn boot(
                c: &mut $Conn,
                id: &str,
                info: &BootInfo,
                status_if_new: RegistrationStatus,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<RegistrationStatus> {
                use sqlx::Row;
                let row = sqlx::query(
                    "INSERT INTO chargers (id, registration_status, vendor, model, charge_point_serial_number, \
                         charge_box_serial_number, firmware_version, iccid, imsi, meter_type, meter_serial_number, \
                         last_boot_at, last_seen_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12) \
                     ON CONFLICT (id) DO UPDATE SET vendor = excluded.vendor, model = excluded.model, \
                         charge_point_serial_number = excluded.charge_point_serial_number, \
                         charge_box_serial_number = excluded.charge_box_serial_number, \
                         firmware_version = excluded.firmware_version, iccid = excluded.iccid, imsi = excluded.imsi, \
                         meter_type = excluded.meter_type, meter_serial_number = excluded.meter_serial_number, \
                         last_boot_at = excluded.last_boot_at, last_seen_at = excluded.last_seen_at \
                     RETURNING registration_status",
                )
                .bind(id)
                .bind(status_if_new.as_str())
                .bind(&info.vendor)
                .bind(&info.model)
                .bind(&info.charge_point_serial_number)
                .bind(&info.charge_box_serial_number)
                .bind(&info.firmware_version)
                .bind(&info.iccid)
                .bind(&info.imsi)
                .bind(&info.meter_type)
                .bind(&info.meter_serial_number)
                .bind(at)
                .fetch_one(&mut *c)
                .await?;
                let status: String = row.try_get(0)?;
                RegistrationStatus::parse(&status).with_context(|| format!("bad registration status {status:?}"))
            }

            /// Heartbeats and last-seen times of many chargers, one statement per chunk.
            // The SQLite writer writes these rows one by one (`sqlite_rows`).
            #[allow(dead_code)]
            pub(super) async fn touch_chargers(
                c: &mut $Conn,
                touches: &[Touch<'_>],
            ) -> Result<()> {
                for chunk in chunked(touches) {
                    let mut q = sqlx::QueryBuilder::<$DB>::new("WITH v (id, heartbeat_at, seen_at) AS (");
                    q.push_values(chunk, |mut row, (id, heartbeat, seen)| {
                        row.push_bind(*id).push_bind(*heartbeat).push_bind(*seen);
                    });
                    q.push(
                        ") UPDATE chargers SET last_heartbeat_at = COALESCE(v.heartbeat_at, chargers.last_heartbeat_at), \
                         last_seen_at = v.seen_at FROM v WHERE chargers.id = v.id",
                    );
                    q.build().execute(&mut *c).await.context("recording heartbeats")?;
                }
                Ok(())
            }

            // The SQLite writer writes these rows one by one (`sqlite_rows`).
            #[allow(dead_code)]
            pub(super) async fn upsert_connectors(c: &mut $Conn, statuses: &[&ConnectorStatus]) -> Result<()> {
                for chunk in chunked(statuses) {
                    let mut q = sqlx::QueryBuilder::<$DB>::new(
                        "INSERT INTO connectors (charger_id, connector_id, status, error_code, info, vendor_id, \
                             vendor_error_code, status_at, updated_at) ",
                    );
                    q.push_values(chunk, |mut row, s| {
                        row.push_bind(&s.charger_id)
                            .push_bind(s.connector_id)
                            .push_bind(&s.status)
                            .push_bind(&s.error_code)
                            .push_bind(&s.info)
                            .push_bind(&s.vendor_id)
                            .push_bind(&s.vendor_error_code)
                            .push_bind(s.status_at)
                            .push_bind(s.updated_at);
                    });
                    q.push(
                        " ON CONFLICT (charger_id, connector_id) DO UPDATE SET status = excluded.status, \
                         error_code = excluded.error_code, info = excluded.info, vendor_id = excluded.vendor_id, \
                         vendor_error_code = excluded.vendor_error_code, status_at = excluded.status_at, \
                         updated_at = excluded.updated_at",
                    );
                    q.build().execute(&mut *c).await.context("storing connector statuses")?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl super::ChargerStore for $Store {
            async fn charger(&self, id: &str) -> Result<Option<ChargerRecord>> {
                let row = sqlx::query("SELECT * FROM chargers WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn provision_charger(
                &self,
                id: &str,
                registration: Option<RegistrationStatus>,
                password_hash: Option<Option<String>>,
            ) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO chargers (id, registration_status, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
                    .bind(id)
                    .bind(registration.unwrap_or(RegistrationStatus::Accepted).as_str())
                    .bind(chrono::Utc::now())
                    .execute(&mut *tx)
                    .await?;
                if let Some(status) = registration {
                    sqlx::query("UPDATE chargers SET registration_status = $1 WHERE id = $2")
                        .bind(status.as_str())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(hash) = password_hash {
                    sqlx::query("UPDATE chargers SET password_hash = $1 WHERE id = $2").bind(hash).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn record_boot(
                &self,
                id: &str,
                info: BootInfo,
                status_if_new: RegistrationStatus,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<RegistrationStatus> {
                match self.write(WriteOp::Boot { id: id.to_owned(), info: Box::new(info), status_if_new, at }).await? {
                    WriteOut::Registration(status) => Ok(status),
                    _ => unreachable!("a boot write answers with a registration status"),
                }
            }

            async fn connectors(&self, charger_id: &str) -> Result<Vec<ConnectorStatus>> {
                let rows = sqlx::query("SELECT * FROM connectors WHERE charger_id = $1 ORDER BY connector_id")
                    .bind(charger_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect()
            }
        }
    };
}
