//! The records the store keeps, as the rest of the server sees them.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A charger's standing with the central system (OCPP RegistrationStatus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RegistrationStatus {
    Accepted,
    Pending,
    Rejected,
}

impl RegistrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationStatus::Accepted => "Accepted",
            RegistrationStatus::Pending => "Pending",
            RegistrationStatus::Rejected => "Rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Accepted" => Some(RegistrationStatus::Accepted),
            "Pending" => Some(RegistrationStatus::Pending),
            "Rejected" => Some(RegistrationStatus::Rejected),
            _ => None,
        }
    }
}

/// A stored registration status; anything unknown reads as `Pending`, so a
/// charger whose row was edited by hand must boot again rather than be
/// refused or trusted.
impl From<String> for RegistrationStatus {
    fn from(text: String) -> Self {
        RegistrationStatus::parse(&text).unwrap_or(RegistrationStatus::Pending)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ChargerRecord {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub registration_status: RegistrationStatus,
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub charge_point_serial_number: Option<String>,
    pub charge_box_serial_number: Option<String>,
    pub firmware_version: Option<String>,
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    pub meter_type: Option<String>,
    pub meter_serial_number: Option<String>,
    pub last_boot_at: Option<DateTime<Utc>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What a BootNotification tells about a charger.
#[derive(Debug, Clone, Default)]
pub struct BootInfo {
    pub vendor: String,
    pub model: String,
    pub charge_point_serial_number: Option<String>,
    pub charge_box_serial_number: Option<String>,
    pub firmware_version: Option<String>,
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    pub meter_type: Option<String>,
    pub meter_serial_number: Option<String>,
}

/// The latest StatusNotification of one connector (0 is the charger itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    pub charger_id: String,
    pub connector_id: i64,
    pub status: String,
    pub error_code: String,
    pub info: Option<String>,
    pub vendor_id: Option<String>,
    pub vendor_error_code: Option<String>,
    /// The charger's timestamp, or the arrival time when it sent none.
    pub status_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub id: String,
    pub email: Option<String>,
    pub name: String,
    pub role: String,
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// The driver's battery, for estimating energy from a battery rise;
    /// `None` is the 60 kWh default.
    pub battery_capacity_wh: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// An RFID-style identifier (RFID card, app token) a charger authorizes with.
/// OCPP idTokens are CiString20: compared case-insensitively, but stored and
/// sent exactly as entered (`PTAGf4eff3` stays `PTAGf4eff3`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct IdTagRecord {
    pub id_tag: String,
    pub user_id: Option<String>,
    /// `Accepted`, `Blocked`, `Expired` or `Invalid`, as an operator set it.
    pub status: String,
    pub expiry_date: Option<DateTime<Utc>>,
    pub parent_id_tag: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A StartTransaction as the engine hands it to the store.
#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub charger_id: String,
    pub connector_id: i64,
    pub id_tag: String,
    pub meter_start: i64,
    /// The charger's timestamp as sent (a session's clock takes it, or the
    /// arrival time if it is later).
    pub start_time: DateTime<Utc>,
    pub reservation_id: Option<i64>,
    /// The idTag's own verdict (Accepted, Blocked, Expired, Invalid).
    pub id_tag_status: String,
    pub received_at: DateTime<Utc>,
    /// Prices a session the transaction starts when its station has no tariff.
    pub default_tariff: Tariff,
    /// Anomalies the engine found before the store was asked (a timestamp
    /// in the future, an unknown connector); committed with the start.
    pub anomalies: Vec<NewAnomaly>,
}

/// What the store reads, inside the write, for the engine to decide a
/// StartTransaction: serialized with every other write, so two chargers
/// starting with one idTag at once cannot both be told `Accepted`.
#[derive(Debug, Clone, Default)]
pub struct StartFacts {
    /// The same StartTransaction stored before (a retransmission).
    pub existing: Option<TransactionRecord>,
    /// Transactions still open on the same connector, with their sessions.
    pub open_on_connector: Vec<(TransactionRecord, Option<SessionRecord>)>,
    /// Another open transaction uses the idTag (compared case-insensitively).
    pub id_tag_busy: bool,
    /// The driver the idTag belongs to.
    pub owner: Option<String>,
    /// The driver's battery capacity, if an operator set one.
    pub owner_capacity_wh: Option<i64>,
    /// The driver's active session waiting at this charger for its
    /// transaction (a remote start).
    pub pending_session: Option<SessionRecord>,
    /// The driver's active session, if any (at any station).
    pub owner_active_session: Option<SessionRecord>,
    /// The station (tariff, name) whose id is this charger's.
    pub station: Option<StationRecord>,
    /// The reservation the StartTransaction names, if it exists.
    pub reservation: Option<super::ReservationRecord>,
}

/// The engine's decision on a StartTransaction, which the store carries out.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// Accepted, or ConcurrentTx, Blocked, Expired, Invalid.
    pub id_tag_status: String,
    /// Open transactions on the connector, closed (a new start proves them
    /// over), each with what its session becomes.
    pub close: Vec<(TransactionRecord, Option<SessionProgress>)>,
    /// The session the transaction belongs to; its `transaction_id` is
    /// filled in by the store once the transaction has its id.
    pub session: SessionPlan,
    /// The reservation the transaction uses: marked `used` in the same commit.
    pub use_reservation: Option<i64>,
    pub anomalies: Vec<NewAnomaly>,
}

#[derive(Debug, Clone)]
pub enum SessionPlan {
    None,
    /// A driver's waiting session (remote start) takes this transaction.
    Bind(SessionRecord),
    /// A driver's waiting session is cancelled: the idTag was refused.
    Cancel(SessionRecord),
    /// A new OCPP session for the driver the idTag belongs to.
    Create(SessionRecord),
}

/// Decides a StartTransaction from what the store read. A plain function so
/// the store can call it inside its write without knowing the engine.
pub type DecideStart = fn(&NewTransaction, &StartFacts) -> StartPlan;

#[derive(Debug, Clone)]
pub struct StartOutcome {
    pub transaction: TransactionRecord,
    pub id_tag_status: String,
    /// The same StartTransaction was stored before: same id, nothing new.
    pub retransmission: bool,
    /// Transactions the start closed.
    pub closed: Vec<TransactionRecord>,
    /// The session now bound to the transaction, if any.
    pub session: Option<BoundSession>,
}

/// What the engine needs to keep a charger's session in step with its
/// transaction without reading it: which session, and its tariff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSession {
    pub id: String,
    pub price_micros: i64,
    pub currency: String,
}

impl BoundSession {
    pub fn of(s: &SessionRecord) -> Self {
        BoundSession {
            id: s.id.clone(),
            price_micros: s.price_micros,
            currency: s.currency.clone(),
        }
    }
}

/// One sampled value of a MeterValues or a StopTransaction's transactionData.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Sample {
    #[serde(skip)]
    pub sampled_at: DateTime<Utc>,
    pub measurand: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub format: Option<String>,
    pub value: String,
}

/// One meterValue entry as stored: the sampled values a charger took at one
/// moment, in one row (an 8-value three-phase reading is one row, not eight).
#[derive(Debug, Clone)]
pub struct NewReading {
    pub charger_id: String,
    pub connector_id: i64,
    /// `None` for readings outside a transaction, or for a transaction the
    /// charger does not own (kept for an operator, with an anomaly).
    pub transaction_id: Option<i64>,
    pub sampled_at: DateTime<Utc>,
    /// All taken at `sampled_at`; each sampled value is stored once.
    pub samples: Vec<Sample>,
    pub received_at: DateTime<Utc>,
}

/// A stored meterValue entry.
#[derive(Debug, Clone)]
pub struct StoredReading {
    pub id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    pub transaction_id: Option<i64>,
    pub sampled_at: DateTime<Utc>,
    pub samples: Vec<Sample>,
}

/// Something to keep for an operator (see [`Anomaly`]).
#[derive(Debug, Clone)]
pub struct NewAnomaly {
    pub charger_id: String,
    pub transaction_id: Option<i64>,
    pub kind: String,
    pub detail: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// What a charger's figures change in its session: decided by the engine,
/// written by the store only while the session is still active (or, for a
/// `correction`, while it is completed by a close and not yet charged).
#[derive(Debug, Clone)]
pub struct SessionProgress {
    pub session_id: String,
    pub energy_wh: f64,
    pub cost_minor: i64,
    pub last_reading_at: Option<DateTime<Utc>>,
    /// The latest SoC; `None` leaves the battery level as it is.
    pub battery_level: Option<f64>,
    /// Fills a session's missing start level only.
    pub battery_level_start: Option<f64>,
    /// Set when the transaction ended: the session completes.
    pub end: Option<(DateTime<Utc>, String)>,
    pub updated_at: DateTime<Utc>,
}

/// Everything one charger message changes, committed together: what makes
/// "answered only after it is stored" hold for the whole message.
#[derive(Debug, Clone, Default)]
pub struct ChargerWrite {
    pub charger_id: String,
    /// Sets `last_heartbeat_at` (and `last_seen_at`).
    pub heartbeat: Option<DateTime<Utc>>,
    /// Sets `last_seen_at` only.
    pub seen: Option<DateTime<Utc>>,
    pub connector: Option<ConnectorStatus>,
    pub readings: Vec<NewReading>,
    /// Transactions whose running figures or state changed (every mutable
    /// column is written from the record).
    pub transactions: Vec<TransactionRecord>,
    pub sessions: Vec<SessionProgress>,
    /// A StopTransaction that arrives after a close corrects the session
    /// the close completed, if it has not been charged yet.
    pub corrections: Vec<SessionProgress>,
    pub anomalies: Vec<NewAnomaly>,
}

impl ChargerWrite {
    pub fn new(charger_id: &str) -> Self {
        ChargerWrite {
            charger_id: charger_id.to_owned(),
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.heartbeat.is_none()
            && self.seen.is_none()
            && self.connector.is_none()
            && self.readings.is_empty()
            && self.transactions.is_empty()
            && self.sessions.is_empty()
            && self.corrections.is_empty()
            && self.anomalies.is_empty()
    }
}

/// How many meterValue entries (one per MeterValues carrying one) and
/// sampled values are stored, and how many frames the message log holds.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestCounts {
    pub meter_value_messages: i64,
    pub sampled_values: i64,
    pub logged_frames: i64,
}

/// Transaction states. `closed` is a transaction the charger never stopped
/// but showed to be over (its connector went Available): a StopTransaction
/// that arrives later still completes it with the charger's own values.
pub const TX_ACTIVE: &str = "active";
pub const TX_STOPPED: &str = "stopped";
pub const TX_CLOSED: &str = "closed";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Transaction)]
pub struct TransactionRecord {
    pub id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    pub id_tag: String,
    pub id_tag_status: String,
    pub reservation_id: Option<i64>,
    pub meter_start: i64,
    pub start_time: DateTime<Utc>,
    pub status: String,
    pub meter_stop: Option<i64>,
    pub stop_time: Option<DateTime<Utc>>,
    pub stop_reason: Option<String>,
    pub stop_id_tag: Option<String>,
    pub last_register_wh: Option<f64>,
    pub last_register_at: Option<DateTime<Utc>>,
    /// Energy delivered, never negative: the latest register − meterStart
    /// while it runs; once stopped, the charger's own meterStop − meterStart.
    pub energy_wh: f64,
    pub soc_start: Option<f64>,
    pub soc_last: Option<f64>,
    pub soc_last_at: Option<DateTime<Utc>>,
    pub power_w_last: Option<f64>,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSample {
    pub id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    pub transaction_id: Option<i64>,
    pub sampled_at: DateTime<Utc>,
    pub measurand: String,
    pub phase: Option<String>,
    pub unit: Option<String>,
    pub context: Option<String>,
    pub location: Option<String>,
    pub format: Option<String>,
    pub value: String,
}

/// Something a charger sent that was answered but is not right: kept for an
/// operator, never a reason to withhold an answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Anomaly {
    pub id: i64,
    pub charger_id: String,
    pub transaction_id: Option<i64>,
    pub kind: String,
    pub detail: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    /// From the charger to the server.
    In,
    /// From the server to the charger.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One OCPP-J frame as it crossed the wire, for the operator's message log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggedMessage {
    pub id: i64,
    pub charger_id: String,
    pub direction: String,
    pub message_type: i64,
    pub message_id: String,
    pub action: Option<String>,
    pub payload: String,
    pub logged_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewLogEntry {
    pub charger_id: String,
    pub direction: Direction,
    pub message_type: i64,
    pub message_id: String,
    pub action: Option<String>,
    pub payload: String,
    pub logged_at: DateTime<Utc>,
}

/// A charging station as drivers see it: name and tariff. A station whose id
/// is also a charger identity is that OCPP charger.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct StationRecord {
    pub id: String,
    pub name: String,
    /// Price per kWh in millionths of the currency's major unit.
    pub price_micros: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The tariff a session is priced with, fixed when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tariff {
    pub price_micros: i64,
    pub currency: String,
}

pub const SESSION_ACTIVE: &str = "active";
pub const SESSION_COMPLETED: &str = "completed";
pub const SESSION_CANCELLED: &str = "cancelled";

/// One charging session, whichever source feeds it (`app` or `ocpp`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub station_id: String,
    pub station_name: String,
    /// As the app names it (`connector-1`).
    pub connector_id: String,
    pub source: String,
    pub status: String,
    pub charger_id: Option<String>,
    pub ocpp_connector_id: Option<i64>,
    pub transaction_id: Option<i64>,
    pub id_tag: Option<String>,
    /// The charger's clock for OCPP sessions, the server's for app sessions.
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    /// The charger's time of the latest meter reading (OCPP sessions).
    pub last_reading_at: Option<DateTime<Utc>>,
    pub battery_level_start: Option<f64>,
    pub battery_level: Option<f64>,
    pub energy_wh: f64,
    /// Energy came from a meter or the app, not estimated from the battery.
    pub energy_reported: bool,
    pub price_micros: i64,
    pub currency: String,
    pub cost_minor: i64,
    pub battery_capacity_wh: i64,
    pub station_rating: Option<i64>,
    pub end_reason: Option<String>,
    /// A remote start not turned into a transaction by then is cancelled.
    pub remote_start_deadline: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Read from the store; written only through [`super::PaymentStore`].
    #[sqlx(flatten)]
    pub payment: SessionPayment,
}

/// Where and for whom a new session starts.
#[derive(Debug, Clone)]
pub struct SessionStart {
    pub user_id: String,
    pub station_id: String,
    pub station_name: String,
    pub connector_id: String,
    pub tariff: Tariff,
    pub battery_capacity_wh: i64,
    pub start_time: DateTime<Utc>,
}

impl SessionRecord {
    /// A new active app session with nothing delivered yet; an OCPP session
    /// sets its charger fields on top.
    pub fn begin(start: SessionStart) -> Self {
        let now = Utc::now();
        SessionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: start.user_id,
            station_id: start.station_id,
            station_name: start.station_name,
            connector_id: start.connector_id,
            source: "app".into(),
            status: SESSION_ACTIVE.into(),
            charger_id: None,
            ocpp_connector_id: None,
            transaction_id: None,
            id_tag: None,
            start_time: start.start_time,
            end_time: None,
            last_reading_at: None,
            battery_level_start: None,
            battery_level: None,
            energy_wh: 0.0,
            energy_reported: false,
            price_micros: start.tariff.price_micros,
            currency: start.tariff.currency,
            cost_minor: 0,
            battery_capacity_wh: start.battery_capacity_wh,
            station_rating: None,
            end_reason: None,
            remote_start_deadline: None,
            created_at: now,
            updated_at: now,
            payment: SessionPayment::default(),
        }
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionConflict {
    UserHasActiveSession,
    ConnectorBusy,
}

/// A balance check, kept whatever its outcome.
#[derive(Debug, Clone)]
pub struct BalanceCheckRecord {
    pub id: String,
    pub user_id: String,
    pub wallet_address: String,
    pub chain: String,
    pub currency: String,
    pub requested_amount_minor: i64,
    pub actual_balance_minor: Option<i64>,
    /// SUFFICIENT, INSUFFICIENT or ERROR.
    pub status: String,
    pub provider: String,
    pub error_message: Option<String>,
    pub metadata: serde_json::Value,
    pub session_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const LINK_PENDING: &str = "pending";
pub const LINK_PAID: &str = "paid";
pub const LINK_EXPIRED: &str = "expired";
pub const LINK_FAILED: &str = "failed";

#[derive(Debug, Clone)]
pub struct PaymentLinkRecord {
    pub id: String,
    pub session_id: String,
    pub user_id: String,
    pub provider: String,
    /// The provider's own id (a Stripe Checkout Session id).
    pub provider_ref: Option<String>,
    pub url: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub metadata: serde_json::Value,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One leg of a ledger movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub account: String,
    pub currency: String,
    pub amount_minor: i64,
}

/// A session's payment details (sessions started through the payment API).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct SessionPayment {
    pub wallet_address: Option<String>,
    pub chain: Option<String>,
    pub balance_check_id: Option<String>,
    /// The payment step (hold release, payment link) is still owed.
    pub payment_due: bool,
}

#[cfg(test)]
mod tests {
    use super::RegistrationStatus;

    #[test]
    fn a_stored_registration_status_reads_back_and_unknown_ones_are_pending() {
        for status in [
            RegistrationStatus::Accepted,
            RegistrationStatus::Pending,
            RegistrationStatus::Rejected,
        ] {
            assert_eq!(RegistrationStatus::from(status.as_str().to_owned()), status);
        }
        assert_eq!(
            RegistrationStatus::from("accepted?".to_owned()),
            RegistrationStatus::Pending
        );
    }
}
