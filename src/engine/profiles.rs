//! Charging profiles (OCPP 1.6, Smart Charging profile) kept by the server.
//!
//! An operator assigns a profile (ChargePointMaxProfile, TxDefaultProfile or
//! TxProfile) to a charger's connector; the server stores it, gives it its
//! chargingProfileId (the row's id), sends it with SetChargingProfile and
//! keeps the charger's answer (`accepted`, `rejected`, `not_supported`;
//! `pending` while it has not been answered, `failed` on a CALLERROR). A
//! profile of the same connector, purpose and stack level replaces the one
//! before it, as on the charger. Stored profiles are sent again whenever the
//! charger comes back (after its BootNotification is answered, or after a
//! reconnect without one; see [`Engine::charger_ready`]): a charger loses
//! them when it reboots. A TxProfile is sent again only while its
//! transaction runs.

use super::service::{command_error, Engine, EngineError};
use crate::charger::CommandError;
use crate::ocpp::time::now_ms;
use crate::store::*;
use serde_json::{json, Value};
use std::time::Duration;

pub const CHARGE_POINT_MAX_PROFILE: &str = "ChargePointMaxProfile";
pub const TX_DEFAULT_PROFILE: &str = "TxDefaultProfile";
pub const TX_PROFILE: &str = "TxProfile";

/// A profile to assign: the csChargingProfiles object of SetChargingProfile
/// without its chargingProfileId, which the server allocates.
#[derive(Debug, Clone)]
pub struct ProfileRequest {
    pub charger_id: String,
    pub connector_id: i64,
    pub profile: serde_json::Map<String, Value>,
}

/// The SetChargingProfile payload for a stored profile.
pub fn set_payload(p: &ChargingProfileRecord) -> anyhow::Result<Value> {
    let mut profile: Value = serde_json::from_str(&p.profile)?;
    profile["chargingProfileId"] = json!(p.id);
    Ok(json!({ "connectorId": p.connector_id, "csChargingProfiles": profile }))
}

fn stored_status(answer: &str) -> Option<&'static str> {
    Some(match answer {
        "Accepted" => "accepted",
        "Rejected" => "rejected",
        "NotSupported" => "not_supported",
        _ => return None,
    })
}

impl Engine {
    /// Stores a profile and sends it. Returns it with the charger's answer,
    /// and whether the charger answered: an offline or silent charger
    /// leaves it `pending`, to be sent when the charger comes back.
    pub async fn set_charging_profile(
        &self,
        request: ProfileRequest,
    ) -> Result<(ChargingProfileRecord, bool), EngineError> {
        let mut profile = request.profile;
        if profile.contains_key("chargingProfileId") {
            return Err(EngineError::invalid(
                "chargingProfile.chargingProfileId",
                "chargingProfileId is allocated by the server; leave it out",
            ));
        }
        // The whole SetChargingProfile, checked against its schema.
        profile.insert("chargingProfileId".into(), json!(1));
        let payload = json!({ "connectorId": request.connector_id, "csChargingProfiles": profile });
        crate::ocpp::schema::validate_request("SetChargingProfile", &payload).map_err(|e| {
            EngineError::invalid(
                "chargingProfile",
                format!(
                    "chargingProfile is not an OCPP 1.6 csChargingProfiles: {}",
                    e.description
                ),
            )
        })?;
        profile.remove("chargingProfileId");
        let purpose = profile["chargingProfilePurpose"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let stack_level = profile["stackLevel"].as_i64().unwrap_or(0);
        let transaction_id = profile.get("transactionId").and_then(Value::as_i64);
        match purpose.as_str() {
            CHARGE_POINT_MAX_PROFILE if request.connector_id != 0 => {
                return Err(EngineError::invalid(
                    "connectorId",
                    "a ChargePointMaxProfile applies to the whole charger: connectorId 0",
                ))
            }
            TX_PROFILE => {
                let Some(tid) = transaction_id else {
                    return Err(EngineError::invalid(
                        "chargingProfile.transactionId",
                        "a TxProfile names the transaction it limits",
                    ));
                };
                let running = self.store.transaction(tid).await?.is_some_and(|t| {
                    t.charger_id == request.charger_id
                        && t.connector_id == request.connector_id
                        && t.status == TX_ACTIVE
                });
                if !running {
                    return Err(EngineError::invalid(
                        "chargingProfile.transactionId",
                        format!("transaction {tid} is not running on this connector"),
                    ));
                }
            }
            _ if transaction_id.is_some() => {
                return Err(EngineError::invalid(
                    "chargingProfile.transactionId",
                    "only a TxProfile names a transaction",
                ))
            }
            _ => {}
        }
        if self.store.charger(&request.charger_id).await?.is_none() {
            return Err(EngineError::NotFound(format!(
                "Charger {} not found",
                request.charger_id
            )));
        }
        let stored = self
            .store
            .upsert_charging_profile(&NewChargingProfile {
                charger_id: request.charger_id,
                connector_id: request.connector_id,
                purpose,
                stack_level,
                transaction_id,
                profile: Value::Object(profile).to_string(),
                at: now_ms(),
            })
            .await?;
        Ok(self.deliver_profile(stored).await?)
    }

    /// Sends a stored profile and keeps the answer. The flag says whether
    /// the charger answered.
    pub(super) async fn deliver_profile(
        &self,
        p: ChargingProfileRecord,
    ) -> anyhow::Result<(ChargingProfileRecord, bool)> {
        let payload = set_payload(&p)?;
        let sent_at = now_ms();
        let answer = self
            .registry
            .call(&p.charger_id, "SetChargingProfile", payload)
            .await;
        let (status, last_error, answered) = match answer {
            Ok(a) => {
                let said = a["status"].as_str().unwrap_or_default();
                match stored_status(said) {
                    Some(status) => (status, None, true),
                    None => ("failed", Some(format!("answered {said:?}")), true),
                }
            }
            // Nothing was sent: it goes out when the charger connects.
            Err(CommandError::Offline) => return Ok((p, false)),
            Err(e @ (CommandError::Timeout | CommandError::ConnectionLost)) => {
                (PROFILE_PENDING, Some(e.to_string()), false)
            }
            Err(e) => ("failed", Some(e.to_string()), true),
        };
        let kept = ProfileAnswer {
            status: status.to_owned(),
            last_error,
            sent_at,
            answered_at: answered.then(now_ms),
        };
        self.store
            .set_profile_answer(p.id, &p.profile, &kept)
            .await?;
        let stored = self.store.charging_profile(p.id).await?.unwrap_or(p);
        Ok((stored, answered))
    }

    /// A charger's stored profiles.
    pub async fn charging_profiles(
        &self,
        charger_id: &str,
    ) -> Result<Vec<ChargingProfileRecord>, EngineError> {
        if self.store.charger(charger_id).await?.is_none() {
            return Err(EngineError::NotFound(format!(
                "Charger {charger_id} not found"
            )));
        }
        Ok(self.store.charging_profiles_of(charger_id).await?)
    }

    /// Clears a stored profile on the charger (ClearChargingProfile by its
    /// id) and forgets it. `Unknown` (the charger does not hold it) forgets
    /// it too; an offline or silent charger changes nothing. Returns the
    /// profile and the charger's answer.
    pub async fn clear_charging_profile(
        &self,
        charger_id: &str,
        id: i64,
    ) -> Result<(ChargingProfileRecord, String), EngineError> {
        let p = self
            .store
            .charging_profile(id)
            .await?
            .filter(|p| p.charger_id == charger_id)
            .ok_or_else(|| {
                EngineError::NotFound(format!("Charging profile {id} of {charger_id} not found"))
            })?;
        let answer = self
            .registry
            .call(charger_id, "ClearChargingProfile", json!({ "id": id }))
            .await
            .map_err(|e| command_error(e, charger_id, "clear the charging profile"))?;
        let said = answer["status"].as_str().unwrap_or_default().to_owned();
        self.store.delete_charging_profile(id).await?;
        Ok((p, said))
    }

    /// GetCompositeSchedule: the charger's answer as it gave it.
    pub async fn composite_schedule(
        &self,
        charger_id: &str,
        connector_id: i64,
        duration: i64,
        unit: Option<&str>,
    ) -> Result<Value, EngineError> {
        if self.store.charger(charger_id).await?.is_none() {
            return Err(EngineError::NotFound(format!(
                "Charger {charger_id} not found"
            )));
        }
        let mut payload = json!({ "connectorId": connector_id, "duration": duration });
        if let Some(unit) = unit {
            payload["chargingRateUnit"] = json!(unit);
        }
        self.registry
            .call(charger_id, "GetCompositeSchedule", payload)
            .await
            .map_err(|e| command_error(e, charger_id, "give its composite schedule"))
    }

    /// Sends a charger its stored profiles again, oldest first (TxProfiles
    /// only while their transaction runs). Stops at the first that cannot
    /// reach it.
    pub async fn resend_profiles(&self, charger_id: &str) -> anyhow::Result<()> {
        for p in self.store.charging_profiles_of(charger_id).await? {
            if p.purpose == TX_PROFILE {
                let running = match p.transaction_id {
                    Some(tid) => self
                        .store
                        .transaction(tid)
                        .await?
                        .is_some_and(|t| t.status == TX_ACTIVE),
                    None => false,
                };
                if !running {
                    continue;
                }
            }
            let (stored, answered) = self.deliver_profile(p).await?;
            tracing::info!(charger = %charger_id, profile = stored.id, status = %stored.status, "charging profile sent again");
            if !answered {
                break;
            }
        }
        Ok(())
    }

    /// What a charger gets once it is back (its BootNotification answered,
    /// or reconnected without one): its stored profiles, then its local
    /// list reconciled. Runs beside the connection, whose outgoing queue
    /// sends these CALLs one at a time, in order, after the answer in hand.
    ///
    /// A step that fails (the database busy with a reconnect storm, the
    /// charger gone) is tried again, up to four times, after 1, 2 and 4 s
    /// (with jitter, so a storm's retries spread out) while the charger is
    /// still connected; sending a profile or a list again is harmless.
    pub async fn charger_ready(self, charger_id: String) {
        let mut profiles_done = false;
        let mut list_done = false;
        for attempt in 0..4u32 {
            if attempt > 0 {
                let base = Duration::from_secs(1 << (attempt - 1));
                let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
                tokio::time::sleep(base + jitter).await;
                if self
                    .registry
                    .presence(&charger_id)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    return;
                }
            }
            let last = attempt == 3;
            if !profiles_done {
                match self.resend_profiles(&charger_id).await {
                    Ok(()) => profiles_done = true,
                    Err(e) if last => {
                        tracing::warn!(charger = %charger_id, "charging profiles not sent again: {e:#}")
                    }
                    Err(e) => {
                        tracing::debug!(charger = %charger_id, attempt, "charging profiles not sent again yet: {e:#}")
                    }
                }
            }
            if attempt == 0 {
                self.site_charger_back(&charger_id);
            }
            if !list_done {
                match self.reconcile_local_list(&charger_id).await {
                    Ok(()) => list_done = true,
                    Err(e) if last => {
                        tracing::warn!(charger = %charger_id, "local list not reconciled: {e:#}")
                    }
                    Err(e) => {
                        tracing::debug!(charger = %charger_id, attempt, "local list not reconciled yet: {e:#}")
                    }
                }
            }
            if profiles_done && list_done {
                return;
            }
        }
    }
}
