//! One simulated OCPP 1.6J charge point.
//!
//! A charger is one Tokio task that owns everything about it: the WebSocket,
//! the outbox of CALLs, the connectors with their vehicles and meters, the
//! configuration keys and charging profiles. It runs a `select!` over the next
//! frame from the server, the next command from whoever drives it (a person's
//! script, a scenario, a fleet), and its next timer. Owning all of it in one
//! task is what makes "only one CALL outstanding" (OCPP-J 1.6 §4.1.1) easy to
//! keep: the next CALL leaves only once the previous one is answered or timed out.
//!
//! The parts live in:
//! - [`connection`]: opening the WebSocket (URL, auth, subprotocol, TLS, buffers);
//! - [`outbox`]: outgoing CALLs and the offline queue;
//! - `session`: connectors, vehicles, transactions and meter values;
//! - `commands`: answers to every server-to-charger command of OCPP 1.6;
//! - [`smart_charging`], [`config_keys`].

mod commands;
pub mod config_keys;
pub mod connection;
pub mod outbox;
mod session;
pub mod smart_charging;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::clock::SimClock;
use crate::summary::{ProbeResult, Recorder};
use crate::vehicle::{ChargerModel, Vehicle, VehicleModel};
use config_keys::ConfigKeys;
use connection::{Endpoint, Ws};
use ocpp_j::frame::{self, Call, Frame, FrameError};
use ocpp_j::time::format_ms;
use ocpp_j::{schema, CallError, ErrorCode};
use outbox::{Outbox, Outgoing};
use session::{Connector, FinishedTx};
use smart_charging::Profiles;

/// Everything that makes one charger what it is.
#[derive(Debug, Clone)]
pub struct ChargerConfig {
    pub id: String,
    /// HTTP Basic password (security profile 1/2); the user name is the id.
    pub password: Option<String>,
    pub model: ChargerModel,
    pub vendor: String,
    pub model_name: String,
    pub firmware: String,
    pub clock: SimClock,
    /// How far the charger's own clock is off, in seconds (clock-skew fault).
    pub clock_skew_s: i64,
    /// Real time to wait for an answer before giving up on (or retransmitting) a CALL.
    pub call_timeout: Duration,
    /// Real time before the first reconnection attempt; doubles up to 30 s.
    pub reconnect_delay: Duration,
    pub connect_timeout: Duration,
    pub source_addr: Option<IpAddr>,
    /// Meter register of every connector at power-on (Wh).
    pub initial_register_wh: u64,
    /// Heartbeat interval (simulated s) until the server sets one.
    pub heartbeat_interval_s: u64,
    /// MeterValueSampleInterval (simulated s).
    pub meter_interval_s: u64,
    /// A vehicle to plug in by itself when the server starts a transaction
    /// remotely on an empty connector, as if the driver had just plugged in.
    /// `None`: wait for a plug-in (ConnectionTimeOut).
    pub auto_plug: Option<VehicleModel>,
    pub seed: u64,
}

impl ChargerConfig {
    pub fn new(id: impl Into<String>) -> Self {
        ChargerConfig {
            id: id.into(),
            password: None,
            model: ChargerModel::default(),
            vendor: "csms-sim".into(),
            model_name: "SimCharger".into(),
            firmware: "1.0.0".into(),
            clock: SimClock::starting_now(1.0),
            clock_skew_s: 0,
            call_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            source_addr: None,
            initial_register_wh: 0,
            heartbeat_interval_s: 300,
            meter_interval_s: 60,
            auto_plug: Some(VehicleModel::default()),
            seed: 0,
        }
    }
}

/// What a driver (person, scenario, fleet) can do to a charger.
#[derive(Debug, Clone)]
pub enum Command {
    /// A vehicle is plugged into the connector.
    PlugIn { connector: u32, vehicle: Vehicle },
    /// An RFID card is held to the reader: authorizes and starts, or stops the
    /// transaction it started.
    PresentIdTag { connector: u32, id_tag: String },
    /// The cable is pulled out (stops a running transaction with `EVDisconnected`).
    Unplug { connector: u32 },
    /// Stops the connector's transaction with the given reason (e.g. `Local`).
    Stop { connector: u32, reason: String },
    /// The network goes away for this long (real time); transaction messages queue.
    Outage { duration: Duration },
    /// The answer to the next transaction message is lost: the connection drops
    /// right after it arrives, and the message is sent again after reconnecting,
    /// with the same message id (`reuse_id`) or a new one with the same content.
    LoseNextAnswer { reuse_id: bool },
    /// Power loss and reboot: transactions end with reason `PowerLoss`, reported after the new boot.
    PowerCycle,
    /// The connector's energy register jumps back to zero.
    ResetMeter { connector: u32 },
    /// The charger reports a fault (`errorCode` of StatusNotification); `NoError` clears it.
    Fault { connector: u32, error_code: String },
    /// Sends a raw text frame (malformed-frame probes) and records what comes back.
    Probe { text: String },
    /// Stops the charger: optionally ends its transactions (reason `Other`),
    /// delivers what is queued, closes the connection and ends the task.
    Shutdown { stop_transactions: bool },
}

/// What the outside can see of a charger, published after every event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChargerView {
    pub connected: bool,
    pub accepted: bool,
    pub boots: u32,
    pub queued: usize,
    pub in_flight: bool,
    pub sessions_finished: u32,
    pub connectors: Vec<ConnectorView>,
    pub finished: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectorView {
    pub id: u32,
    pub status: String,
    pub plugged: bool,
    pub in_transaction: bool,
    pub transaction_id: Option<i32>,
    pub soc: Option<f64>,
    pub power_w: f64,
    pub register_wh: i64,
}

impl ChargerView {
    pub fn connector(&self, id: u32) -> Option<&ConnectorView> {
        self.connectors.iter().find(|c| c.id == id)
    }

    /// Connected, registered and nothing left to send.
    pub fn idle(&self) -> bool {
        self.connected && self.accepted && self.queued == 0 && !self.in_flight
    }
}

/// The handle a driver holds on a running charger.
pub struct ChargerHandle {
    pub id: String,
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<ChargerView>,
    task: JoinHandle<()>,
}

impl ChargerHandle {
    pub async fn send(&self, command: Command) -> anyhow::Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| anyhow::anyhow!("charger {} has stopped", self.id))
    }

    pub fn view(&self) -> ChargerView {
        self.view.borrow().clone()
    }

    /// Waits (real time) until the charger's state satisfies `f`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        f: impl FnMut(&ChargerView) -> bool,
    ) -> anyhow::Result<ChargerView> {
        let outcome = match tokio::time::timeout(timeout, self.view.wait_for(f)).await {
            Ok(Ok(v)) => Ok(v.clone()),
            Ok(Err(_)) => Err("stopped"),
            Err(_) => Err("timed out"),
        };
        outcome.map_err(|why| {
            anyhow::anyhow!(
                "charger {}: {why} waiting until {what}; state {:?}",
                self.id,
                self.view()
            )
        })
    }

    /// Asks the charger to stop and waits for its task to end.
    pub async fn shutdown(self, stop_transactions: bool) {
        let _ = self
            .commands
            .send(Command::Shutdown { stop_transactions })
            .await;
        let _ = self.task.await;
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts a charger task on the current Tokio runtime.
pub fn spawn(
    config: ChargerConfig,
    endpoint: Arc<Endpoint>,
    recorder: Arc<Recorder>,
) -> ChargerHandle {
    let (tx, rx) = mpsc::channel(32);
    let (view_tx, view_rx) = watch::channel(ChargerView::default());
    let id = config.id.clone();
    let charger = Charger::new(config, endpoint, recorder, rx, view_tx);
    let task = tokio::spawn(charger.run());
    ChargerHandle {
        id,
        commands: tx,
        view: view_rx,
        task,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    /// Powered on, BootNotification not yet accepted.
    Booting,
    Accepted,
}

/// A CALL sent and not yet answered.
struct InFlight {
    id: String,
    out: Outgoing,
    deadline: Instant,
}

/// Why a CALL of ours got no usable answer: the server's CALLERROR, or an
/// answer that failed its schema.
struct Refusal {
    code: String,
    description: String,
}

/// The message id of a probe frame, when its answer can be told by it: a CALL
/// (even a malformed one whose id can be read), or a frame of an unknown
/// MessageTypeId, which a server should ignore but may answer.
fn probe_id(text: &str) -> Option<String> {
    match frame::parse(text) {
        Ok(Frame::Call(Call { id, .. })) | Err(FrameError::Reply { id, .. }) => Some(id),
        Err(FrameError::UnknownMessageType(_)) => serde_json::from_str::<Value>(text)
            .ok()?
            .get(1)?
            .as_str()
            .map(str::to_owned),
        _ => None,
    }
}

/// Something the charger does later by itself.
#[derive(Debug, Clone)]
enum Scheduled {
    /// Reboot after a Reset (soft or hard) or a firmware update.
    Reboot {
        reason: &'static str,
    },
    FirmwareStep(u8),
    DiagnosticsStep(u8),
    /// A remotely started transaction waited too long for the vehicle.
    ConnectionTimeout {
        connector: u32,
    },
}

enum Event {
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Command(Option<Command>),
    Tick,
}

struct Charger {
    cfg: ChargerConfig,
    endpoint: Arc<Endpoint>,
    rec: Arc<Recorder>,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    view: watch::Sender<ChargerView>,
    rng: ChaCha8Rng,

    conn: Option<Ws>,
    registration: Registration,
    boots: u32,
    outbox: Outbox,
    in_flight: Option<InFlight>,
    next_message_id: u64,
    /// Earliest time the next CALL may leave (retry interval after a CALLERROR).
    hold_until: Option<Instant>,

    connectors: Vec<Connector>,
    /// Status of connector 0, the charger itself.
    charger_status: String,
    charger_operative: bool,
    keys: ConfigKeys,
    profiles: Profiles,
    local_list_version: i64,
    local_list: HashMap<String, String>,
    firmware: String,
    firmware_status: &'static str,
    diagnostics_status: &'static str,
    /// A firmware update installs across a reboot; `Installed` is reported after the next boot.
    firmware_installing: bool,

    /// Server transaction id per local transaction number.
    tx_ids: HashMap<u64, i32>,
    /// Transactions stopped on the charger, waiting for their StopTransaction to be answered.
    finishing: HashMap<u64, FinishedTx>,
    next_local_tx: u64,
    sessions_finished: u32,

    heartbeat_at: Option<Instant>,
    boot_at: Option<Instant>,
    reconnect_at: Instant,
    reconnect_backoff: Duration,
    offline_until: Option<Instant>,
    scheduled: Vec<(Instant, Scheduled)>,
    lose_next_answer: Option<bool>,
    probes: Vec<String>,
    probes_waiting: HashMap<String, String>,
    /// Set by Shutdown: when the outbox is drained (or this deadline passes) the task ends.
    shutdown_deadline: Option<Instant>,
    /// A Reset waiting for its StopTransactions to go out.
    reboot_pending: Option<(Instant, &'static str)>,
}

impl Charger {
    fn new(
        cfg: ChargerConfig,
        endpoint: Arc<Endpoint>,
        rec: Arc<Recorder>,
        commands: mpsc::Receiver<Command>,
        view: watch::Sender<ChargerView>,
    ) -> Self {
        let connectors = (1..=cfg.model.connectors)
            .map(|id| Connector::new(id, cfg.initial_register_wh))
            .collect();
        let keys = ConfigKeys::new(
            cfg.model.connectors,
            cfg.heartbeat_interval_s,
            cfg.meter_interval_s,
        );
        Charger {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            firmware: cfg.firmware.clone(),
            firmware_status: "Idle",
            diagnostics_status: "Idle",
            firmware_installing: false,
            cfg,
            endpoint,
            rec,
            commands,
            commands_open: true,
            view,
            conn: None,
            registration: Registration::Booting,
            boots: 0,
            outbox: Outbox::default(),
            in_flight: None,
            next_message_id: 1,
            hold_until: None,
            connectors,
            charger_status: "Available".into(),
            charger_operative: true,
            keys,
            profiles: Profiles::default(),
            local_list_version: 0,
            local_list: HashMap::new(),
            tx_ids: HashMap::new(),
            finishing: HashMap::new(),
            next_local_tx: 1,
            sessions_finished: 0,
            heartbeat_at: None,
            boot_at: Some(Instant::now()),
            reconnect_at: Instant::now(),
            reconnect_backoff: Duration::ZERO,
            offline_until: None,
            scheduled: Vec::new(),
            lose_next_answer: None,
            probes: Vec::new(),
            probes_waiting: HashMap::new(),
            shutdown_deadline: None,
            reboot_pending: None,
        }
    }

    /// The charger's own clock: simulated time plus its skew.
    fn now(&self) -> DateTime<Utc> {
        self.cfg.clock.now() + chrono::Duration::seconds(self.cfg.clock_skew_s)
    }

    fn now_ts(&self) -> String {
        format_ms(self.now())
    }

    #[tracing::instrument(name = "charger", skip_all, fields(id = %self.cfg.id))]
    async fn run(mut self) {
        loop {
            if self.ready_to_finish() {
                self.close().await;
                break;
            }
            if self.conn.is_none() && self.may_connect() {
                self.try_connect().await;
            }
            self.pump().await;
            self.publish();
            let deadline = self.next_deadline();
            let event = tokio::select! {
                m = next_message(&mut self.conn) => Event::Frame(m),
                c = self.commands.recv(), if self.commands_open => Event::Command(c),
                _ = tokio::time::sleep_until(deadline) => Event::Tick,
            };
            match event {
                Event::Frame(Some(Ok(message))) => self.on_message(message).await,
                Event::Frame(Some(Err(e))) => {
                    tracing::debug!("connection error: {e}");
                    self.on_disconnect();
                }
                Event::Frame(None) => self.on_disconnect(),
                Event::Command(Some(c)) => self.on_command(c).await,
                Event::Command(None) => {
                    // Whoever drove this charger is gone: stop like Shutdown without ending sessions.
                    self.commands_open = false;
                    self.begin_shutdown(false);
                }
                Event::Tick => self.on_tick().await,
            }
        }
        self.publish_finished();
    }

    // ---------------------------------------------------------------- connection

    fn may_connect(&self) -> bool {
        let now = Instant::now();
        self.offline_until.is_none_or(|t| now >= t)
            && now >= self.reconnect_at
            && self.shutdown_deadline.is_none()
    }

    async fn try_connect(&mut self) {
        let stats = &self.rec.stats;
        match connection::connect(
            &self.endpoint,
            &self.cfg.id,
            self.cfg.password.as_deref(),
            self.cfg.source_addr,
            self.cfg.connect_timeout,
        )
        .await
        {
            Ok(ws) => {
                tracing::debug!("connected");
                stats.connects.fetch_add(1, Ordering::Relaxed);
                stats.connected.fetch_add(1, Ordering::Relaxed);
                self.conn = Some(ws);
                self.offline_until = None;
                self.reconnect_backoff = Duration::ZERO;
                if self.registration == Registration::Booting {
                    self.boot_at = Some(Instant::now());
                }
            }
            Err(e) => {
                tracing::debug!("connect failed: {e:#}");
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                self.schedule_reconnect();
            }
        }
    }

    fn schedule_reconnect(&mut self) {
        self.reconnect_backoff = next_backoff(self.reconnect_backoff, self.cfg.reconnect_delay);
        self.reconnect_at = Instant::now() + jittered(self.reconnect_backoff, &mut self.rng);
    }

    /// The connection is gone (server closed it, network error, or an injected fault).
    fn on_disconnect(&mut self) {
        if self.conn.take().is_some() {
            self.rec.stats.connected.fetch_sub(1, Ordering::Relaxed);
            self.rec.stats.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("disconnected");
        }
        if let Some(f) = self.in_flight.take() {
            self.outbox.put_back(f.out);
        }
        self.authorize_offline();
        self.outbox.on_disconnect();
        self.schedule_reconnect();
    }

    /// Authorize requests the server will now never answer: decide offline, as
    /// chargers with offline authorization do, rather than leave the driver waiting.
    fn authorize_offline(&mut self) {
        let pending: Vec<(u32, String)> = self
            .outbox
            .iter()
            .filter(|m| m.action == "Authorize")
            .filter_map(|m| Some((m.connector?, m.payload["idTag"].as_str()?.to_string())))
            .collect();
        for (connector, tag) in pending {
            self.authorized(connector as usize - 1, tag);
        }
    }

    async fn close(&mut self) {
        if let Some(mut ws) = self.conn.take() {
            let _ = ws.close(None).await;
            self.rec.stats.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn send_text(&mut self, text: String) -> bool {
        let Some(ws) = self.conn.as_mut() else {
            return false;
        };
        tracing::debug!(">> {text}");
        match ws.send(Message::text(text)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("send failed: {e}");
                self.on_disconnect();
                false
            }
        }
    }

    // ---------------------------------------------------------------- outgoing CALLs

    fn queue(&mut self, action: &str, payload: Value) {
        let out = Outgoing::new(action, payload, self.now());
        self.outbox.push(out);
    }

    fn new_message_id(&mut self) -> String {
        let id = self.next_message_id;
        self.next_message_id += 1;
        // Unique across reboots of the same charger too: the boot count is part of it.
        format!("{}-{}", self.boots, id)
    }

    /// Sends the next CALL if the line is free: one outstanding CALL at a time,
    /// and nothing but BootNotification before the server has accepted the boot.
    async fn pump(&mut self) {
        if self.conn.is_none() || self.in_flight.is_some() {
            return;
        }
        if let Some(text) = (!self.probes.is_empty()).then(|| self.probes.remove(0)) {
            if let Some(id) = probe_id(&text) {
                self.probes_waiting.insert(id, text.clone());
            } else {
                self.rec.record_probe(ProbeResult {
                    charger_id: self.cfg.id.clone(),
                    sent: text.clone(),
                    answer: "none".into(),
                });
            }
            self.send_text(text).await;
            return;
        }
        let now = Instant::now();
        let out = if self.registration == Registration::Booting {
            if self.boot_at.is_none_or(|t| now < t) {
                return;
            }
            self.boot_at = None;
            Outgoing::new("BootNotification", self.boot_payload(), self.now())
        } else {
            if self.hold_until.is_some_and(|t| now < t) {
                return;
            }
            match self.outbox.pop() {
                Some(o) => o,
                None => return,
            }
        };
        self.send_call(out).await;
    }

    async fn send_call(&mut self, mut out: Outgoing) {
        let id = match &out.id {
            Some(id) => id.clone(),
            None => {
                let id = self.new_message_id();
                out.id = Some(id.clone());
                id
            }
        };
        if let (Some(local), true) = (out.tx, out.action != "StartTransaction") {
            let server_id = self.tx_ids.get(&local).copied().unwrap_or(-1);
            out.payload["transactionId"] = json!(server_id);
        }
        out.attempts += 1;
        let text = frame::encode_call(&id, &out.action, &out.payload);
        let deadline = Instant::now() + self.cfg.call_timeout;
        self.in_flight = Some(InFlight { id, out, deadline });
        if self.send_text(text).await {
            self.rec.stats.calls_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn boot_payload(&self) -> Value {
        json!({
            "chargePointVendor": self.cfg.vendor,
            "chargePointModel": self.cfg.model_name,
            "chargePointSerialNumber": format!("SN-{}", self.cfg.id),
            "chargeBoxSerialNumber": format!("CB-{}", self.cfg.id),
            "firmwareVersion": self.firmware,
            "meterType": "SimMeter",
        })
    }

    // ---------------------------------------------------------------- incoming frames

    async fn on_message(&mut self, message: Message) {
        self.rec
            .stats
            .frames_received
            .fetch_add(1, Ordering::Relaxed);
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(_) => {
                tracing::warn!("binary frame ignored");
                return;
            }
            Message::Close(_) => {
                self.on_disconnect();
                return;
            }
            // tungstenite answers pings by itself.
            _ => return,
        };
        tracing::debug!("<< {text}");
        match frame::parse(&text) {
            Ok(Frame::Call(Call {
                id,
                action,
                payload,
            })) => {
                self.rec.stats.server_calls.fetch_add(1, Ordering::Relaxed);
                let answer = self.on_call(&id, &action, &payload);
                // Our own answers are held to their schema, as the server's
                // are: a bug here shows as an InternalError, not as a payload
                // the server has to make sense of.
                let (out, then) = match answer.result {
                    Ok(payload) => match schema::validate_response(&action, &payload) {
                        Ok(()) => (frame::encode_result(&id, &payload), Some(answer.then)),
                        Err(e) => {
                            tracing::error!(
                                "our answer to {action} fails its schema: {e}: {payload}"
                            );
                            let error = CallError::new(
                                ErrorCode::InternalError,
                                "the charger's answer failed its schema",
                            );
                            (frame::encode_error(&id, &error), None)
                        }
                    },
                    Err(error) => (frame::encode_error(&id, &error), Some(answer.then)),
                };
                if self.send_text(out).await {
                    if let Some(then) = then {
                        then(self);
                    }
                }
            }
            Ok(Frame::CallResult { id, payload }) => self.on_answer(&id, Ok(payload)),
            Ok(Frame::CallError {
                id,
                code,
                description,
                ..
            }) => {
                self.rec.stats.call_errors.fetch_add(1, Ordering::Relaxed);
                self.on_answer(&id, Err(Refusal { code, description }));
            }
            Err(FrameError::UnknownMessageType(t)) => {
                tracing::debug!("unknown message type {t} ignored: {text}")
            }
            Err(FrameError::Unreadable(why)) => {
                tracing::warn!("bad frame from server dropped: {why}: {text}")
            }
            Err(FrameError::Reply { id, error }) => {
                tracing::warn!("bad frame from server: {error}: {text}");
                self.send_text(frame::encode_error(&id, &error)).await;
            }
        }
    }

    fn on_answer(&mut self, id: &str, answer: Result<Value, Refusal>) {
        if let Some(sent) = self.probes_waiting.remove(id) {
            let answer = match &answer {
                Ok(_) => "result".to_string(),
                Err(e) => e.code.clone(),
            };
            self.rec.record_probe(ProbeResult {
                charger_id: self.cfg.id.clone(),
                sent,
                answer,
            });
            return;
        }
        if self.in_flight.as_ref().is_none_or(|f| f.id != id) {
            tracing::debug!("answer to unknown message {id} dropped");
            return;
        }
        let InFlight { out, .. } = self.in_flight.take().unwrap();
        // An answer that does not fit its schema cannot be acted on (the same
        // check the server makes of a charger's answers): it counts as a
        // refusal, so a transaction message is sent again.
        let answer =
            answer.and_then(
                |payload| match schema::validate_response(&out.action, &payload) {
                    Ok(()) => Ok(payload),
                    Err(e) => {
                        tracing::warn!("the answer to {} fails its schema: {e}", out.action);
                        Err(Refusal {
                            code: e.code.as_str().to_owned(),
                            description: e.description,
                        })
                    }
                },
            );
        match answer {
            Ok(payload) => {
                if out.is_transaction_message() {
                    if let Some(reuse_id) = self.lose_next_answer.take() {
                        // Fault: the answer never reached us. Drop the line and
                        // send the same message again after reconnecting.
                        tracing::info!("losing the answer to {} {id}", out.action);
                        let mut again = out;
                        if !reuse_id {
                            again.id = None;
                        }
                        self.note_fault(again.tx, "lost-answer");
                        self.outbox.put_back(again);
                        self.on_disconnect();
                        self.reconnect_at = Instant::now() + self.cfg.reconnect_delay;
                        return;
                    }
                }
                self.on_result(out, payload);
            }
            Err(e) => {
                tracing::warn!("{} answered with {} {}", out.action, e.code, e.description);
                let attempts = self.keys.transaction_message_attempts.max(1);
                if out.action == "BootNotification" {
                    self.boot_at = Some(
                        self.cfg
                            .clock
                            .deadline_in(self.keys.heartbeat_interval.clamp(10, 300) as f64),
                    );
                } else if out.is_transaction_message() && out.attempts < attempts {
                    // OCPP 1.6 §4.7: retry a transaction message the server failed to process.
                    let wait = self.keys.transaction_message_retry_interval * out.attempts as u64;
                    self.hold_until = Some(self.cfg.clock.deadline_in(wait as f64));
                    let mut again = out;
                    again.id = None;
                    self.outbox.put_back(again);
                } else if out.action == "StartTransaction" {
                    // Given up: the transaction has no server id; later messages say -1.
                    if let Some(local) = out.tx {
                        self.tx_ids.insert(local, -1);
                    }
                } else if out.action == "StopTransaction" {
                    if let Some(local) = out.tx {
                        self.finish_record(local);
                    }
                }
            }
        }
    }

    fn on_result(&mut self, out: Outgoing, payload: Value) {
        match out.action.as_str() {
            "BootNotification" => {
                let interval = payload.get("interval").and_then(Value::as_u64);
                match payload.get("status").and_then(Value::as_str) {
                    Some("Accepted") => {
                        self.registration = Registration::Accepted;
                        if let Some(i) = interval.filter(|i| *i > 0) {
                            self.keys.heartbeat_interval = i;
                        }
                        self.heartbeat_at = Some(
                            self.cfg
                                .clock
                                .deadline_in(self.keys.heartbeat_interval as f64),
                        );
                        self.after_boot();
                    }
                    status => {
                        // Pending or Rejected: try again after the interval the server gave.
                        let wait = interval.filter(|i| *i > 0).unwrap_or(60);
                        tracing::info!("boot {status:?}, retrying in {wait} s");
                        self.boot_at = Some(self.cfg.clock.deadline_in(wait as f64));
                    }
                }
            }
            "Authorize" => self.on_authorize_result(&out, &payload),
            "StartTransaction" => self.on_start_result(&out, &payload),
            "StopTransaction" => {
                if let Some(local) = out.tx {
                    self.finish_record(local);
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- commands from the driver

    async fn on_command(&mut self, c: Command) {
        match c {
            Command::PlugIn { connector, vehicle } => self.plug_in(connector, vehicle),
            Command::PresentIdTag { connector, id_tag } => self.present_id_tag(connector, id_tag),
            Command::Unplug { connector } => self.unplug(connector),
            Command::Stop { connector, reason } => self.stop_transaction(connector, &reason),
            Command::Outage { duration } => {
                tracing::info!("outage for {duration:?}");
                for c in &mut self.connectors {
                    if let Some(tx) = c.tx.as_mut() {
                        tx.faults.push("outage".into());
                    }
                }
                // Drop the socket without a close frame, as a pulled cable would.
                self.on_disconnect();
                self.offline_until = Some(Instant::now() + duration);
            }
            Command::LoseNextAnswer { reuse_id } => self.lose_next_answer = Some(reuse_id),
            Command::PowerCycle => self.power_cycle(),
            Command::ResetMeter { connector } => self.reset_meter(connector),
            Command::Fault {
                connector,
                error_code,
            } => self.set_fault(connector, error_code),
            Command::Probe { text } => self.probes.push(text),
            Command::Shutdown { stop_transactions } => self.begin_shutdown(stop_transactions),
        }
    }

    fn begin_shutdown(&mut self, stop_transactions: bool) {
        if stop_transactions {
            for id in 1..=self.connectors.len() as u32 {
                self.stop_transaction(id, "Other");
            }
        }
        let wait = self.cfg.call_timeout.max(Duration::from_secs(5));
        self.shutdown_deadline = Some(Instant::now() + wait);
    }

    fn ready_to_finish(&self) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        let drained = self.outbox.is_empty() && self.in_flight.is_none() && self.probes.is_empty();
        drained || Instant::now() >= deadline || (self.conn.is_none() && self.outbox.is_empty())
    }

    // ---------------------------------------------------------------- timers

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(5);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = next.min(t);
            }
        };
        consider(self.in_flight.as_ref().map(|f| f.deadline));
        consider(self.shutdown_deadline);
        consider(self.reboot_pending.map(|r| r.0));
        consider(self.hold_until);
        if self.conn.is_some() {
            consider(self.heartbeat_at);
            consider(self.boot_at);
        } else if self.shutdown_deadline.is_none() {
            consider(Some(
                self.reconnect_at.max(self.offline_until.unwrap_or(now)),
            ));
        }
        for c in &self.connectors {
            consider(c.next_sample);
            consider(c.reservation.as_ref().map(|r| r.expires_real));
        }
        for (t, _) in &self.scheduled {
            consider(Some(*t));
        }
        next.max(now)
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if self.in_flight.as_ref().is_some_and(|f| now >= f.deadline) {
            let f = self.in_flight.take().unwrap();
            self.rec.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("no answer to {} {} in time", f.out.action, f.id);
            if f.out.action == "BootNotification" {
                self.boot_at = Some(now);
            } else if f.out.is_transaction_message() {
                // Retransmit with the same id: the server may have stored it already.
                self.outbox.put_back(f.out);
            }
        }
        if self.heartbeat_at.is_some_and(|t| now >= t) {
            self.heartbeat_at = Some(
                self.cfg
                    .clock
                    .deadline_in(self.keys.heartbeat_interval.max(1) as f64),
            );
            let already = self.outbox.iter().any(|m| m.action == "Heartbeat");
            if self.conn.is_some() && self.registration == Registration::Accepted && !already {
                self.queue("Heartbeat", json!({}));
            }
        }
        for i in 0..self.connectors.len() {
            if self.connectors[i].next_sample.is_some_and(|t| now >= t) {
                self.sample(i, "Sample.Periodic");
            }
            if self.connectors[i]
                .reservation
                .as_ref()
                .is_some_and(|r| now >= r.expires_real)
            {
                self.connectors[i].reservation = None;
                self.refresh_status(i);
            }
        }
        if let Some((deadline, reason)) = self.reboot_pending {
            let sent = !self.outbox.iter().any(Outgoing::is_transaction_message)
                && self.in_flight.is_none();
            if sent || now >= deadline {
                self.reboot_pending = None;
                self.reboot(reason).await;
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.scheduled)
            .into_iter()
            .partition(|(t, _)| now >= *t);
        self.scheduled = later;
        for (_, what) in due {
            self.on_scheduled(what).await;
        }
    }

    fn schedule(&mut self, sim_secs: f64, what: Scheduled) {
        let at = self.cfg.clock.deadline_in(sim_secs);
        self.scheduled.push((at, what));
    }

    // ---------------------------------------------------------------- power

    /// After an accepted boot: tell the server the state of every connector.
    fn after_boot(&mut self) {
        let status = self.charger_status.clone();
        self.queue_status(0, &status, "NoError");
        if self.firmware_status == "Installed" {
            self.queue(
                "FirmwareStatusNotification",
                json!({ "status": "Installed" }),
            );
            self.firmware_status = "Idle";
        }
        for i in 0..self.connectors.len() {
            self.connectors[i].reported_status = None;
            self.refresh_status(i);
        }
    }

    /// Reboot (Reset, firmware update, power cycle): the connection closes, and
    /// the charger connects and boots again. Queued transaction messages survive,
    /// as they are kept in the charger's non-volatile memory.
    async fn reboot(&mut self, reason: &'static str) {
        tracing::info!("rebooting ({reason})");
        self.finish_firmware_install();
        self.close().await;
        self.on_disconnect();
        self.registration = Registration::Booting;
        self.boots += 1;
        self.boot_at = Some(Instant::now());
        self.heartbeat_at = None;
        self.hold_until = None;
        self.reconnect_at = Instant::now() + self.cfg.reconnect_delay;
        self.reconnect_backoff = Duration::ZERO;
        self.scheduled
            .retain(|(_, s)| !matches!(s, Scheduled::ConnectionTimeout { .. }));
    }

    fn power_cycle(&mut self) {
        tracing::info!("power loss");
        for i in 0..self.connectors.len() {
            if let Some(tx) = self.connectors[i].tx.as_mut() {
                tx.faults.push("power-loss".into());
            }
            self.stop_transaction(i as u32 + 1, "PowerLoss");
        }
        self.on_disconnect();
        self.registration = Registration::Booting;
        self.boots += 1;
        self.boot_at = Some(Instant::now());
        self.heartbeat_at = None;
        self.reconnect_at = Instant::now() + self.cfg.reconnect_delay;
    }

    // ---------------------------------------------------------------- view

    fn publish(&self) {
        let view = ChargerView {
            connected: self.conn.is_some(),
            accepted: self.registration == Registration::Accepted,
            boots: self.boots,
            queued: self.outbox.len() + self.probes.len(),
            in_flight: self.in_flight.is_some(),
            sessions_finished: self.sessions_finished,
            connectors: self
                .connectors
                .iter()
                .map(|c| c.view(&self.tx_ids))
                .collect(),
            finished: false,
        };
        self.view.send_if_modified(|v| {
            if *v != view {
                *v = view;
                true
            } else {
                false
            }
        });
    }

    fn publish_finished(&mut self) {
        for (_, sent) in self.probes_waiting.drain() {
            self.rec.record_probe(ProbeResult {
                charger_id: self.cfg.id.clone(),
                sent,
                answer: "none".into(),
            });
        }
        self.publish();
        self.view.send_modify(|v| {
            v.finished = true;
            v.connected = false;
        });
    }
}

/// The next message on the connection, or never when there is none.
async fn next_message(
    conn: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match conn {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

/// The next reconnect backoff after a failed or lost connection: doubling
/// from `base` up to 30 s, as real chargers back off.
pub(crate) fn next_backoff(previous: Duration, base: Duration) -> Duration {
    let base = base.max(Duration::from_millis(10));
    (previous * 2).clamp(base, Duration::from_secs(30).max(base))
}

/// A backoff with ±50 % jitter, so a fleet that lost its server does not come
/// back as one thundering herd.
pub(crate) fn jittered(backoff: Duration, rng: &mut impl Rng) -> Duration {
    backoff.mul_f64(rng.random_range(0.5..1.5))
}
