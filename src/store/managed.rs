//! Records of the state the server sets on chargers and keeps itself:
//! reservations, charging profiles and local authorization lists.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Reservation statuses. `pending` until the charger answers ReserveNow,
/// then its answer (`accepted`, `faulted`, `occupied`, `rejected`,
/// `unavailable`); an accepted one ends `used`, `cancelled` or `expired`.
pub const RESERVATION_PENDING: &str = "pending";
pub const RESERVATION_ACCEPTED: &str = "accepted";
pub const RESERVATION_USED: &str = "used";
pub const RESERVATION_CANCELLED: &str = "cancelled";
pub const RESERVATION_EXPIRED: &str = "expired";

/// Whether a reservation in `status` still holds its connector.
pub fn reservation_is_live(status: &str) -> bool {
    status == RESERVATION_PENDING || status == RESERVATION_ACCEPTED
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ReservationRecord {
    /// The OCPP reservationId.
    pub id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    pub id_tag: String,
    pub parent_id_tag: Option<String>,
    pub user_id: Option<String>,
    pub expiry_date: DateTime<Utc>,
    pub status: String,
    pub transaction_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A reservation before the store gives it its id.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub charger_id: String,
    pub connector_id: i64,
    pub id_tag: String,
    pub parent_id_tag: Option<String>,
    pub user_id: Option<String>,
    pub expiry_date: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Charging profile statuses: `pending` until the charger answered
/// SetChargingProfile (offline, or no answer yet), then its answer.
pub const PROFILE_PENDING: &str = "pending";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ChargingProfileRecord {
    /// The OCPP chargingProfileId.
    pub id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    pub purpose: String,
    pub stack_level: i64,
    pub transaction_id: Option<i64>,
    /// The csChargingProfiles object without its chargingProfileId, JSON.
    pub profile: String,
    pub status: String,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A profile to store; one of the same charger, connector, purpose and
/// stack level is replaced (it keeps its id).
#[derive(Debug, Clone)]
pub struct NewChargingProfile {
    pub charger_id: String,
    pub connector_id: i64,
    pub purpose: String,
    pub stack_level: i64,
    pub transaction_id: Option<i64>,
    pub profile: String,
    pub at: DateTime<Utc>,
}

/// What the charger answered to a profile (or why it did not).
#[derive(Debug, Clone)]
pub struct ProfileAnswer {
    pub status: String,
    pub last_error: Option<String>,
    pub sent_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
}

/// Local list sync states.
pub const LIST_SYNCED: &str = "synced";
pub const LIST_PENDING: &str = "pending";
pub const LIST_FAILED: &str = "failed";
pub const LIST_NOT_SUPPORTED: &str = "not_supported";

/// A charger's local authorization list as the server last had it
/// confirmed by the charger.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct LocalListRecord {
    pub charger_id: String,
    /// 1 when the server manages the charger's list.
    pub enabled: i64,
    pub max_length: i64,
    pub version: i64,
    /// JSON `[{idTag, idTagInfo}]`, as the charger confirmed it.
    pub entries: String,
    pub sync_state: String,
    pub last_error: Option<String>,
    pub synced_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A site: chargers behind one grid connection and the limit they share.
/// `limit_value`, `min_per_car` and `safe_default` are in `unit`: `A`
/// (amperes per phase) or `kW`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct SiteRecord {
    pub id: String,
    pub name: String,
    pub unit: String,
    pub limit_value: f64,
    pub phases: i64,
    pub voltage: f64,
    pub min_per_car: f64,
    pub safe_default: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A charger's membership of a site.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct SiteChargerRecord {
    pub charger_id: String,
    pub site_id: String,
    pub added_at: DateTime<Utc>,
}
