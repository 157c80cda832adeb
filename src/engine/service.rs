//! The engine's REST-side operations.

use super::calc::{self, DEFAULT_BATTERY_CAPACITY_WH};
use crate::charger::{CommandError, Registry};
use crate::config::Config;
use crate::store::*;
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Why an engine operation did not happen. The messages are the ones the
/// REST contract names; `api::error` maps each to its status and code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("User already has an active charging session")]
    ActiveSessionExists,
    #[error("Active charging session not found")]
    NoActiveSession,
    #[error("Charging session not found")]
    SessionNotFound,
    #[error("Charging session is not active")]
    SessionNotActive,
    #[error("This charging session belongs to another user")]
    NotOwner,
    #[error("Connector {0} is already in use")]
    ConnectorBusy(String),
    #[error("Charger {0} is offline")]
    ChargerOffline(String),
    #[error("Charger refused to {0}")]
    ChargerRejected(&'static str),
    #[error("Charger did not answer in time")]
    ChargerTimeout,
    #[error("Charger answered badly: {0}")]
    ChargerBadAnswer(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    /// A conflict with the state kept (a connector reserved, a reservation
    /// no longer live), or a charger's refusal with what it answered.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: serde_json::Value,
    },
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl EngineError {
    pub(super) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        EngineError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Who asks: a driver acts on their own sessions, an admin on anyone's.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone)]
pub struct StartRequest {
    pub user_id: String,
    pub station_id: String,
    pub connector_id: String,
    pub battery_level_start: Option<f64>,
}

#[derive(Clone)]
pub struct Engine {
    pub(super) store: SharedStore,
    pub(super) registry: Registry,
    pub(super) config: Arc<Config>,
    pub(super) events: super::events::Events,
    /// One lock per charger whose local list the server manages: its
    /// updates are computed and sent one at a time.
    pub(super) list_locks: super::local_list::Locks,
    /// Site load management: each site's balancer and its members.
    pub(super) sites: super::sites::Sites,
}

/// The OCPP connector number in an app's connector name (`connector-2`, `2`).
pub fn ocpp_connector_number(connector_id: &str) -> Option<i64> {
    let digits = connector_id
        .strip_prefix("connector-")
        .unwrap_or(connector_id);
    digits.parse::<i64>().ok().filter(|n| *n > 0)
}

/// The most energy one session may report, in kWh: above any vehicle's
/// battery, far below what would overflow a cost. A client's 1e308 is a
/// mistake or an attack, not a charge.
pub const MAX_SESSION_ENERGY_KWH: f64 = 1000.0;

fn check_percent(field: &'static str, value: f64) -> Result<f64, EngineError> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(EngineError::invalid(
            field,
            format!("{field} must be between 0 and 100"),
        ))
    }
}

pub(super) fn command_error(e: CommandError, charger_id: &str, what: &'static str) -> EngineError {
    match e {
        CommandError::Offline | CommandError::ConnectionLost => {
            EngineError::ChargerOffline(charger_id.to_owned())
        }
        CommandError::Timeout => EngineError::ChargerTimeout,
        CommandError::Busy => {
            EngineError::ChargerBadAnswer("the charger has too many commands waiting".into())
        }
        CommandError::Rejected { .. } => EngineError::ChargerRejected(what),
        other => EngineError::ChargerBadAnswer(other.to_string()),
    }
}

impl Engine {
    pub fn new(store: SharedStore, registry: Registry, config: Arc<Config>) -> Self {
        Engine {
            store,
            registry,
            config,
            events: Default::default(),
            list_locks: Default::default(),
            sites: Default::default(),
        }
    }

    /// Live events, published after each change is committed.
    pub fn events(&self) -> &super::events::Events {
        &self.events
    }

    /// The other nodes, if any.
    pub fn cluster(&self) -> &crate::cluster::Cluster {
        self.registry.cluster()
    }

    /// Tells listeners about a session as it now stands.
    pub(super) fn publish_session(&self, s: &SessionRecord, started: bool) {
        if !self.events.listened() {
            return;
        }
        let name = match s.status.as_str() {
            SESSION_COMPLETED => "session.completed",
            SESSION_CANCELLED => "session.cancelled",
            _ if started => "session.started",
            _ => "session.updated",
        };
        self.events.publish(
            name,
            Some(s.user_id.clone()),
            super::view::session_json(s, Utc::now()),
        );
    }

    /// Tells listeners about sessions a commit changed, read back as stored
    /// (only while someone listens).
    pub(super) async fn publish_sessions(&self, ids: &[String]) {
        if !self.events.listened() {
            return;
        }
        for id in ids {
            match self.store.session(id).await {
                Ok(Some(s)) => self.publish_session(&s, false),
                Ok(None) => {}
                Err(e) => tracing::warn!(session = %id, "event not published: {e:#}"),
            }
        }
    }

    pub fn default_tariff(&self) -> Tariff {
        Tariff {
            price_micros: self.config.default_price_micros,
            currency: self.config.default_currency.clone(),
        }
    }

    /// Starts a session. At a station that is a known OCPP charger the
    /// charger is told to start (RemoteStartTransaction with the driver's
    /// idTag) and its meter becomes the source of energy; elsewhere the app
    /// reports it.
    pub async fn start(&self, request: StartRequest) -> Result<SessionRecord, EngineError> {
        let battery_start = request
            .battery_level_start
            .map(|b| check_percent("batteryLevelStart", b))
            .transpose()?;
        if request.station_id.trim().is_empty() || request.station_id.len() > 128 {
            return Err(EngineError::invalid(
                "stationId",
                "stationId must be 1 to 128 characters",
            ));
        }
        if request.connector_id.trim().is_empty() || request.connector_id.len() > 64 {
            return Err(EngineError::invalid(
                "connectorId",
                "connectorId must be 1 to 64 characters",
            ));
        }
        let station = self.store.station(&request.station_id).await?;
        let charger = self.store.charger(&request.station_id).await?;
        let (name, tariff) = match &station {
            Some(s) => (
                s.name.clone(),
                Tariff {
                    price_micros: s.price_micros,
                    currency: s.currency.clone(),
                },
            ),
            None => ("Charging Station".to_owned(), self.default_tariff()),
        };
        self.store.ensure_user(&request.user_id).await?;
        let capacity = self
            .store
            .user(&request.user_id)
            .await?
            .and_then(|u| u.battery_capacity_wh)
            .unwrap_or(DEFAULT_BATTERY_CAPACITY_WH);
        let now = crate::ocpp::time::now_ms();
        let mut session = SessionRecord::begin(SessionStart {
            user_id: request.user_id.clone(),
            station_id: request.station_id.clone(),
            station_name: name,
            connector_id: request.connector_id.clone(),
            tariff,
            battery_capacity_wh: capacity,
            start_time: now,
        });
        session.battery_level_start = battery_start;
        session.battery_level = battery_start;

        let Some(_charger) = charger else {
            return self.create(session).await;
        };
        // The station is an OCPP charger: its meter is the source of truth.
        let connector = ocpp_connector_number(&request.connector_id).ok_or_else(|| {
            EngineError::invalid(
                "connectorId",
                "connectorId must name a charger connector, e.g. connector-1",
            )
        })?;
        if self.registry.presence(&request.station_id).await?.is_none() {
            return Err(EngineError::ChargerOffline(request.station_id));
        }
        let id_tag = self.id_tag_for(&request.user_id).await?;
        session.source = "ocpp".into();
        session.charger_id = Some(request.station_id.clone());
        session.ocpp_connector_id = Some(connector);
        session.id_tag = Some(id_tag.clone());
        session.energy_reported = true;
        session.remote_start_deadline = Some(
            now + chrono::Duration::from_std(self.config.remote_start_timeout).unwrap_or_default(),
        );
        let session = self.create(session).await?;

        let answer = self
            .registry
            .call(
                &request.station_id,
                "RemoteStartTransaction",
                json!({ "connectorId": connector, "idTag": id_tag }),
            )
            .await;
        match answer {
            Ok(payload) if payload["status"] == "Accepted" => {
                // The charger's StartTransaction may already have bound it.
                Ok(self.store.session(&session.id).await?.unwrap_or(session))
            }
            Ok(_) => {
                self.cancel_record(session, "RemoteStartTransaction rejected")
                    .await?;
                Err(EngineError::ChargerRejected("start charging"))
            }
            Err(e) => {
                self.cancel_record(session, &format!("RemoteStartTransaction failed: {e}"))
                    .await?;
                Err(command_error(e, &request.station_id, "start charging"))
            }
        }
    }

    async fn create(&self, session: SessionRecord) -> Result<SessionRecord, EngineError> {
        match self.store.create_session(session.clone()).await? {
            Ok(()) => {
                self.publish_session(&session, true);
                Ok(session)
            }
            Err(SessionConflict::UserHasActiveSession) => Err(EngineError::ActiveSessionExists),
            Err(SessionConflict::ConnectorBusy) => {
                Err(EngineError::ConnectorBusy(session.connector_id))
            }
        }
    }

    /// The idTag a remote start uses for this driver: an Accepted one of
    /// theirs, or one made for them (an app driver may never have had a card).
    pub(super) async fn id_tag_for(&self, user_id: &str) -> Result<String, EngineError> {
        let tags = self.store.id_tags_of_user(user_id).await?;
        let now = Utc::now();
        if let Some(tag) = tags
            .iter()
            .find(|t| t.status == "Accepted" && t.expiry_date.is_none_or(|e| e > now))
        {
            return Ok(tag.id_tag.clone());
        }
        let tag = format!(
            "APP{}",
            &uuid::Uuid::new_v4().simple().to_string()[..17].to_uppercase()
        );
        self.store
            .upsert_id_tag(&crate::store::IdTagRecord {
                id_tag: tag.clone(),
                user_id: Some(user_id.to_owned()),
                status: "Accepted".into(),
                expiry_date: None,
                parent_id_tag: None,
                created_at: now,
            })
            .await?;
        // A new tag: local lists follow.
        self.id_tags_changed();
        Ok(tag)
    }

    async fn cancel_record(
        &self,
        mut session: SessionRecord,
        reason: &str,
    ) -> Result<SessionRecord, EngineError> {
        let at = crate::ocpp::time::now_ms().max(session.start_time);
        if !self.store.cancel_session(&session.id, at, reason).await? {
            // It ended meanwhile (completed by its charger, or cancelled).
            return Ok(self.store.session(&session.id).await?.unwrap_or(session));
        }
        session.status = SESSION_CANCELLED.into();
        session.end_time = Some(at);
        session.end_reason = Some(reason.to_owned());
        session.cost_minor = 0;
        session.updated_at = Utc::now();
        self.publish_session(&session, false);
        Ok(session)
    }

    /// A session the caller may act on.
    pub async fn owned_session(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<SessionRecord, EngineError> {
        let session = self
            .store
            .session(session_id)
            .await?
            .ok_or(EngineError::SessionNotFound)?;
        if session.user_id != caller.user_id && !caller.is_admin {
            return Err(EngineError::NotOwner);
        }
        Ok(session)
    }

    /// The app's periodic update of its active session.
    pub async fn update_active(
        &self,
        user_id: &str,
        battery_level: f64,
        energy_kwh: Option<f64>,
    ) -> Result<SessionRecord, EngineError> {
        let battery = check_percent("batteryLevel", battery_level)?;
        if let Some(kwh) = energy_kwh {
            if !kwh.is_finite() || !(0.0..=MAX_SESSION_ENERGY_KWH).contains(&kwh) {
                return Err(EngineError::invalid(
                    "energyDelivered",
                    format!("energyDelivered must be between 0 and {MAX_SESSION_ENERGY_KWH} kWh"),
                ));
            }
        }
        let mut session = self
            .store
            .active_session(user_id)
            .await?
            .ok_or(EngineError::NoActiveSession)?;
        session.battery_level = Some(battery);
        session.updated_at = Utc::now();
        // A charger's meter, when there is one, outranks the app: of a
        // charger's session the app changes the battery level only.
        let saved = if session.source == "app" {
            if let Some(kwh) = energy_kwh {
                session.energy_wh = (kwh * 1000.0).round();
                session.energy_reported = true;
            }
            calc::reprice(&mut session);
            self.store.save_session(session.clone()).await?
        } else {
            self.store
                .save_driver_fields(&session.id, Some(battery), None)
                .await?
        };
        if !saved {
            return Err(EngineError::NoActiveSession);
        }
        if session.source == "app" {
            self.publish_session(&session, false);
        } else {
            self.publish_sessions(std::slice::from_ref(&session.id))
                .await;
        }
        Ok(session)
    }

    /// Ends a session: an app session completes now; an OCPP session's
    /// charger is told to stop, and it completes when the charger's
    /// StopTransaction arrives. The flag says the stop is still under way.
    pub async fn end(
        &self,
        caller: &Caller,
        session_id: &str,
        battery_level_end: Option<f64>,
        rating: Option<i64>,
    ) -> Result<(SessionRecord, bool), EngineError> {
        let battery_end = battery_level_end
            .map(|b| check_percent("batteryLevelEnd", b))
            .transpose()?;
        if let Some(r) = rating {
            if !(1..=5).contains(&r) {
                return Err(EngineError::invalid(
                    "stationRating",
                    "stationRating must be between 1 and 5",
                ));
            }
        }
        let mut session = self.owned_session(caller, session_id).await?;
        if session.status != SESSION_ACTIVE {
            return Err(EngineError::SessionNotActive);
        }
        if rating.is_some() {
            session.station_rating = rating;
        }
        if session.source == "app" {
            if let Some(end) = battery_end {
                session.battery_level = Some(end);
            }
            if !session.energy_reported {
                let start = session.battery_level_start.unwrap_or(0.0);
                let end = session.battery_level.unwrap_or(start);
                session.energy_wh =
                    calc::energy_from_battery_wh(start, end, session.battery_capacity_wh);
            }
            session.status = SESSION_COMPLETED.into();
            session.end_time = Some(crate::ocpp::time::now_ms().max(session.start_time));
            session.end_reason = Some("Ended by driver".into());
            calc::reprice(&mut session);
            session.updated_at = Utc::now();
            if !self.store.save_session(session.clone()).await? {
                return Err(EngineError::SessionNotActive);
            }
            self.publish_session(&session, false);
            return Ok((session, false));
        }

        // OCPP: keep what the app knows, then ask the charger to stop.
        if session.battery_level.is_none() {
            session.battery_level = battery_end;
        }
        session.updated_at = Utc::now();
        self.store
            .save_driver_fields(&session.id, session.battery_level, rating)
            .await?;
        let (Some(charger_id), Some(transaction_id)) =
            (session.charger_id.clone(), session.transaction_id)
        else {
            // The charger never started: nothing to stop, nothing to bill.
            let cancelled = self
                .cancel_record(session, "Ended before the charger started")
                .await?;
            return Ok((cancelled, false));
        };
        self.registry
            .call(
                &charger_id,
                "RemoteStopTransaction",
                json!({ "transactionId": transaction_id }),
            )
            .await
            .map_err(|e| command_error(e, &charger_id, "stop charging"))
            .and_then(|answer| match answer["status"].as_str() {
                Some("Accepted") => Ok(()),
                _ => Err(EngineError::ChargerRejected("stop charging")),
            })?;
        match self
            .wait_until_finished(&session.id, self.config.stop_wait)
            .await?
        {
            Some(done) => Ok((done, false)),
            None => Ok((
                self.store.session(&session.id).await?.unwrap_or(session),
                true,
            )),
        }
    }

    /// Waits until the session is no longer active, for at most `within`:
    /// woken by its `session.completed` or `session.cancelled` event (from
    /// whichever node handled the StopTransaction), and reading the session
    /// once a second besides, for an event that never came (another node
    /// may not have heard yet that someone here listens).
    pub async fn wait_until_finished(
        &self,
        session_id: &str,
        within: Duration,
    ) -> Result<Option<SessionRecord>, EngineError> {
        use tokio::sync::broadcast::error::RecvError;
        let deadline = tokio::time::Instant::now() + within;
        // Subscribed before the first read, so no event falls between.
        let mut events = self.events.subscribe();
        loop {
            if let Some(s) = self.store.session(session_id).await? {
                if s.status != SESSION_ACTIVE {
                    return Ok(Some(s));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wake = deadline.min(now + Duration::from_secs(1));
            loop {
                match tokio::time::timeout_at(wake, events.recv()).await {
                    Err(_) | Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Err(RecvError::Closed)) => {
                        tokio::time::sleep_until(wake).await;
                        break;
                    }
                    Ok(Ok(event)) => {
                        if matches!(event.name, "session.completed" | "session.cancelled")
                            && event.data["id"] == session_id
                        {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Cancels a session: nothing is billed. A running charger is told to stop.
    pub async fn cancel(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<SessionRecord, EngineError> {
        let session = self.owned_session(caller, session_id).await?;
        if session.status != SESSION_ACTIVE {
            return Err(EngineError::SessionNotActive);
        }
        if let (Some(charger_id), Some(transaction_id)) =
            (&session.charger_id, session.transaction_id)
        {
            if let Err(e) = self
                .registry
                .call(
                    charger_id,
                    "RemoteStopTransaction",
                    json!({ "transactionId": transaction_id }),
                )
                .await
            {
                tracing::warn!(charger = %charger_id, transaction_id, "stop for a cancelled session not delivered: {e}");
            }
        }
        self.cancel_record(session, "Cancelled by driver").await
    }

    /// Cancels remote starts that never became a transaction in time. Runs
    /// for the life of the server; checking the database each round keeps it
    /// right across restarts and with several nodes.
    pub async fn sweep_remote_starts(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            // Once per cluster: on the node holding the lease.
            if !self.registry.cluster().lease("remote-starts", every).await {
                continue;
            }
            // Only the overdue ones are read, not every active session.
            let sessions = match self.store.overdue_remote_starts(Utc::now()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("remote-start sweep failed: {e:#}");
                    continue;
                }
            };
            for session in sessions {
                tracing::info!(session = %session.id, "remote start never became a transaction: cancelled");
                if let Err(e) = self
                    .cancel_record(session, "Charger did not start a transaction in time")
                    .await
                {
                    tracing::warn!("could not cancel an overdue remote start: {e}");
                }
            }
        }
    }
}
