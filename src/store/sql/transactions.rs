//! Transactions and their meter readings.

macro_rules! transactions_sql {
    ($Store:ident, $DB:ty, $Conn:ty) => {
        impl $Store {
            // The SQLite writer writes these rows one by one (`sqlite_rows`).
            #[allow(dead_code)]
            pub(super) async fn insert_readings(c: &mut $Conn, readings: &[&NewReading]) -> Result<()> {
                for chunk in chunked(readings) {
                    let mut q = sqlx::QueryBuilder::<$DB>::new(
                        "INSERT INTO meter_readings (charger_id, connector_id, transaction_id, sampled_at, \
                             sample_count, samples, received_at) ",
                    );
                    let mut encoded = Vec::with_capacity(chunk.len());
                    for r in chunk {
                        encoded.push(serde_json::to_string(&r.samples)?);
                    }
                    q.push_values(chunk.iter().zip(encoded), |mut row, (r, samples)| {
                        row.push_bind(&r.charger_id)
                            .push_bind(r.connector_id)
                            .push_bind(r.transaction_id)
                            .push_bind(r.sampled_at)
                            .push_bind(r.samples.len() as i64)
                            .push_bind(samples)
                            .push_bind(r.received_at);
                    });
                    q.build().execute(&mut *c).await.context("storing meter readings")?;
                }
                Ok(())
            }

            /// Writes every mutable column of the given transactions.
            pub(super) async fn save_transactions(c: &mut $Conn, txs: &[&TransactionRecord]) -> Result<()> {
                for chunk in chunked(txs) {
                    let mut q = sqlx::QueryBuilder::<$DB>::new(
                        "WITH v (id, status, meter_stop, stop_time, stop_reason, stop_id_tag, last_register_wh, \
                             last_register_at, energy_wh, soc_start, soc_last, soc_last_at, power_w_last, updated_at) AS (",
                    );
                    q.push_values(chunk, |mut row, t| {
                        row.push_bind(t.id)
                            .push_bind(&t.status)
                            .push_bind(t.meter_stop)
                            .push_bind(t.stop_time)
                            .push_bind(&t.stop_reason)
                            .push_bind(&t.stop_id_tag)
                            .push_bind(t.last_register_wh)
                            .push_bind(t.last_register_at)
                            .push_bind(t.energy_wh)
                            .push_bind(t.soc_start)
                            .push_bind(t.soc_last)
                            .push_bind(t.soc_last_at)
                            .push_bind(t.power_w_last)
                            .push_bind(t.updated_at);
                    });
                    q.push(
                        ") UPDATE transactions SET status = v.status, meter_stop = v.meter_stop, stop_time = v.stop_time, \
                             stop_reason = v.stop_reason, stop_id_tag = v.stop_id_tag, last_register_wh = v.last_register_wh, \
                             last_register_at = v.last_register_at, energy_wh = v.energy_wh, soc_start = v.soc_start, \
                             soc_last = v.soc_last, soc_last_at = v.soc_last_at, power_w_last = v.power_w_last, \
                             updated_at = v.updated_at \
                         FROM v WHERE transactions.id = v.id",
                    );
                    q.build().execute(&mut *c).await.context("saving transactions")?;
                }
                Ok(())
            }

            async fn select_transactions(c: &mut $Conn, sql: &str, binds: (&str, i64)) -> Result<Vec<TransactionRecord>> {
                let rows = sqlx::query(sql).bind(binds.0).bind(binds.1).bind(TX_ACTIVE).fetch_all(&mut *c).await?;
                rows.iter().map(record).collect()
            }

            /// What the engine decides a StartTransaction from, read inside the write.
            async fn start_facts(c: &mut $Conn, tx: &NewTransaction) -> Result<StartFacts> {
                use sqlx::Row;
                let mut facts = StartFacts::default();
                for old in Self::select_transactions(
                    c,
                    "SELECT * FROM transactions WHERE charger_id = $1 AND connector_id = $2 AND status = $3",
                    (&tx.charger_id, tx.connector_id),
                )
                .await?
                {
                    let session = Self::session_of_transaction_in(c, old.id).await?.filter(|s| s.status == SESSION_ACTIVE);
                    facts.open_on_connector.push((old, session));
                }
                // Open elsewhere, that is: not one of those the start closes.
                facts.id_tag_busy = sqlx::query(
                    "SELECT id FROM transactions WHERE upper(id_tag) = upper($1) AND status = $2 \
                     AND NOT (charger_id = $3 AND connector_id = $4) LIMIT 1",
                )
                .bind(&tx.id_tag)
                .bind(TX_ACTIVE)
                .bind(&tx.charger_id)
                .bind(tx.connector_id)
                .fetch_optional(&mut *c)
                .await?
                .is_some();
                let owner = sqlx::query("SELECT user_id FROM id_tags WHERE upper(id_tag) = upper($1)")
                    .bind(&tx.id_tag)
                    .fetch_optional(&mut *c)
                    .await?;
                facts.owner = owner.map(|r| r.try_get::<Option<String>, _>(0)).transpose()?.flatten();
                if let Some(owner) = &facts.owner {
                    let capacity = sqlx::query("SELECT battery_capacity_wh FROM users WHERE id = $1")
                        .bind(owner)
                        .fetch_optional(&mut *c)
                        .await?;
                    facts.owner_capacity_wh = capacity.map(|r| r.try_get::<Option<i64>, _>(0)).transpose()?.flatten();
                    let active = sqlx::query("SELECT * FROM sessions WHERE user_id = $1 AND status = $2")
                        .bind(owner)
                        .bind(SESSION_ACTIVE)
                        .fetch_optional(&mut *c)
                        .await?;
                    facts.owner_active_session = active.as_ref().map(record).transpose()?;
                    facts.pending_session = facts
                        .owner_active_session
                        .clone()
                        .filter(|s| s.charger_id.as_deref() == Some(tx.charger_id.as_str()) && s.transaction_id.is_none());
                }
                let station = sqlx::query("SELECT * FROM stations WHERE id = $1").bind(&tx.charger_id).fetch_optional(&mut *c).await?;
                facts.station = station.as_ref().map(record).transpose()?;
                if let Some(id) = tx.reservation_id {
                    facts.reservation = Self::reservation_in(c, id).await?;
                }
                Ok(facts)
            }

            pub(super) async fn start(c: &mut $Conn, tx: &NewTransaction, decide: DecideStart) -> Result<StartOutcome> {
                use sqlx::Acquire;
                let key = start_key(tx);
                let existing = sqlx::query("SELECT * FROM transactions WHERE start_key = $1")
                    .bind(&key)
                    .fetch_optional(&mut *c)
                    .await?;
                if let Some(row) = existing {
                    let transaction: TransactionRecord = record(&row)?;
                    let session = Self::session_of_transaction_in(c, transaction.id)
                        .await?
                        .filter(|s| s.status == SESSION_ACTIVE)
                        .map(|s| BoundSession::of(&s));
                    return Ok(StartOutcome {
                        id_tag_status: transaction.id_tag_status.clone(),
                        transaction,
                        retransmission: true,
                        closed: Vec::new(),
                        session,
                    });
                }
                let facts = Self::start_facts(c, tx).await?;
                let plan = decide(tx, &facts);
                let closed: Vec<&TransactionRecord> = plan.close.iter().map(|(t, _)| t).collect();
                Self::save_transactions(c, &closed).await?;
                let ended: Vec<&SessionProgress> = plan.close.iter().filter_map(|(_, p)| p.as_ref()).collect();
                Self::progress_sessions(c, &ended, false).await?;
                let now = chrono::Utc::now();
                let row = sqlx::query(
                    "INSERT INTO transactions (charger_id, connector_id, id_tag, id_tag_status, reservation_id, meter_start, \
                         start_time, start_key, status, received_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *",
                )
                .bind(&tx.charger_id)
                .bind(tx.connector_id)
                .bind(&tx.id_tag)
                .bind(&plan.id_tag_status)
                .bind(tx.reservation_id)
                .bind(tx.meter_start)
                .bind(tx.start_time)
                .bind(&key)
                .bind(TX_ACTIVE)
                .bind(tx.received_at)
                .bind(now)
                .fetch_one(&mut *c)
                .await?;
                let transaction: TransactionRecord = record(&row)?;
                let id = transaction.id;
                if let Some(reservation) = plan.use_reservation {
                    Self::use_reservation_in(c, reservation, id, now).await?;
                }
                let mut anomalies: Vec<NewAnomaly> = tx
                    .anomalies
                    .iter()
                    .cloned()
                    .map(|mut a| {
                        a.transaction_id = a.transaction_id.or(Some(id));
                        a
                    })
                    .chain(plan.anomalies.iter().cloned())
                    .collect();
                // The session this transaction belongs to. Its own savepoint:
                // a session that cannot be bound is an anomaly for an
                // operator, never a reason to fail the charger's
                // StartTransaction.
                let mut session = None;
                let mut nested = c.begin().await?;
                let bound = match &plan.session {
                    SessionPlan::None => Ok(None),
                    SessionPlan::Bind(s) => {
                        let mut s = s.clone();
                        s.transaction_id = Some(id);
                        Self::bind_session_in(&mut nested, &s).await.map(|bound| bound.then(|| BoundSession::of(&s)))
                    }
                    SessionPlan::Create(s) => {
                        let mut s = s.clone();
                        s.transaction_id = Some(id);
                        Self::insert_session(&mut nested, &s).await.map(|()| Some(BoundSession::of(&s)))
                    }
                    SessionPlan::Cancel(s) => Self::cancel_in(&mut nested, &s.id, s.end_time.unwrap_or(now), s.end_reason.as_deref().unwrap_or("Cancelled"))
                        .await
                        .map(|_| None),
                };
                match bound {
                    Ok(bound) => {
                        nested.commit().await?;
                        session = bound;
                    }
                    Err(e) => {
                        nested.rollback().await?;
                        anomalies.push(crate::engine::charging::anomaly(
                            &tx.charger_id,
                            Some(id),
                            "session_not_bound",
                            serde_json::json!({"error": format!("{e:#}")}),
                            tx.received_at,
                        ));
                    }
                }
                let refs: Vec<&NewAnomaly> = anomalies.iter().collect();
                Self::insert_anomalies(c, &refs).await?;
                Ok(StartOutcome {
                    id_tag_status: plan.id_tag_status.clone(),
                    transaction,
                    retransmission: false,
                    closed: plan.close.into_iter().map(|(t, _)| t).collect(),
                    session,
                })
            }

            fn reading_from_row(row: &<$DB as sqlx::Database>::Row) -> Result<StoredReading> {
                use sqlx::Row;
                let sampled_at = row.try_get("sampled_at")?;
                let samples: String = row.try_get("samples")?;
                Ok(StoredReading {
                    id: row.try_get("id")?,
                    charger_id: row.try_get("charger_id")?,
                    connector_id: row.try_get("connector_id")?,
                    transaction_id: row.try_get("transaction_id")?,
                    sampled_at,
                    samples: samples_from_json(&samples, sampled_at)?,
                })
            }
        }

        #[async_trait::async_trait]
        impl super::TransactionStore for $Store {
            async fn start_transaction(&self, tx: NewTransaction, decide: DecideStart) -> Result<StartOutcome> {
                match self.write(WriteOp::Start(Box::new(tx), decide)).await? {
                    WriteOut::Started(outcome) => Ok(*outcome),
                    _ => unreachable!("a start write answers with its outcome"),
                }
            }

            async fn transaction(&self, id: i64) -> Result<Option<TransactionRecord>> {
                let row = sqlx::query("SELECT * FROM transactions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(record).transpose()
            }

            async fn transactions(&self, f: super::TransactionFilter) -> Result<Vec<TransactionRecord>> {
                // NULL parameters switch a condition off, so one statement serves every filter.
                let rows = sqlx::query(
                    "SELECT * FROM transactions WHERE ($1 IS NULL OR charger_id = $1) AND ($2 IS NULL OR status = $2) \
                     ORDER BY id DESC LIMIT $3",
                )
                .bind(&f.charger_id)
                .bind(&f.status)
                .bind(f.limit.unwrap_or(1000))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(record).collect()
            }

            async fn transactions_page(
                &self,
                charger_id: &str,
                status: Option<&str>,
                page: super::Page,
            ) -> Result<super::Paged<TransactionRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM transactions WHERE charger_id = $1 AND ($2 IS NULL OR status = $2) \
                     ORDER BY id DESC LIMIT $3 OFFSET $4",
                )
                .bind(charger_id)
                .bind(status)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM transactions WHERE charger_id = $1 AND ($2 IS NULL OR status = $2)",
                )
                .bind(charger_id)
                .bind(status)
                .fetch_one(&self.pool)
                .await?;
                Ok(super::Paged {
                    items: rows.iter().map(record).collect::<Result<_>>()?,
                    total,
                })
            }

            async fn open_transactions(&self, charger_id: &str) -> Result<Vec<TransactionRecord>> {
                let rows = sqlx::query("SELECT * FROM transactions WHERE charger_id = $1 AND status = $2 ORDER BY id")
                    .bind(charger_id)
                    .bind(TX_ACTIVE)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect()
            }

            async fn meter_values(&self, transaction_id: i64) -> Result<Vec<StoredSample>> {
                let rows = sqlx::query("SELECT * FROM meter_readings WHERE transaction_id = $1 ORDER BY sampled_at, id")
                    .bind(transaction_id)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = Vec::new();
                for row in &rows {
                    let r = Self::reading_from_row(row)?;
                    out.extend(r.samples.into_iter().map(|s| StoredSample {
                        id: r.id,
                        charger_id: r.charger_id.clone(),
                        connector_id: r.connector_id,
                        transaction_id: r.transaction_id,
                        sampled_at: r.sampled_at,
                        measurand: s.measurand,
                        phase: s.phase,
                        unit: s.unit,
                        context: s.context,
                        location: s.location,
                        format: s.format,
                        value: s.value,
                    }));
                }
                Ok(out)
            }

            async fn recent_readings(&self, charger_id: &str, transaction_id: Option<i64>, limit: i64) -> Result<Vec<StoredReading>> {
                let rows = match transaction_id {
                    Some(id) => {
                        sqlx::query("SELECT * FROM meter_readings WHERE transaction_id = $1 ORDER BY sampled_at DESC LIMIT $2")
                            .bind(id)
                            .bind(limit)
                            .fetch_all(&self.pool)
                            .await?
                    }
                    None => {
                        sqlx::query(
                            "SELECT * FROM meter_readings WHERE charger_id = $1 AND transaction_id IS NULL \
                             ORDER BY sampled_at DESC LIMIT $2",
                        )
                        .bind(charger_id)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.iter().map(Self::reading_from_row).collect()
            }

            async fn readings_between(
                &self,
                charger_id: &str,
                transaction_id: Option<i64>,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<StoredReading>> {
                let rows = match transaction_id {
                    Some(id) => {
                        sqlx::query("SELECT * FROM meter_readings WHERE transaction_id = $1 AND sampled_at >= $2 AND sampled_at <= $3")
                            .bind(id)
                            .bind(from)
                            .bind(to)
                            .fetch_all(&self.pool)
                            .await?
                    }
                    None => {
                        sqlx::query(
                            "SELECT * FROM meter_readings WHERE charger_id = $1 AND transaction_id IS NULL \
                             AND sampled_at >= $2 AND sampled_at <= $3",
                        )
                        .bind(charger_id)
                        .bind(from)
                        .bind(to)
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.iter().map(Self::reading_from_row).collect()
            }

            async fn ingest_counts(&self) -> Result<IngestCounts> {
                use sqlx::Row;
                let readings = sqlx::query("SELECT count(*), CAST(COALESCE(sum(sample_count), 0) AS BIGINT) FROM meter_readings")
                    .fetch_one(&self.pool)
                    .await?;
                let log = sqlx::query("SELECT count(*) FROM ocpp_messages").fetch_one(&self.pool).await?;
                Ok(IngestCounts {
                    meter_value_messages: readings.try_get(0)?,
                    sampled_values: readings.try_get(1)?,
                    logged_frames: log.try_get(0)?,
                })
            }
        }
    };
}
