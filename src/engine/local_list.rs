//! Local authorization lists (OCPP 1.6, Local Auth List Management profile)
//! kept by the server.
//!
//! What a charger's list holds: every idTag that belongs to a user, with
//! its idTagInfo as the operator set it (status, expiryDate, parentIdTag),
//! in tag order, bounded by the charger's own limit (the smaller of
//! `SendLocalListMaxLength` and `LocalAuthListMaxLength`, read with
//! GetConfiguration when an operator enables the list; beyond it the last
//! tags in order are left out). The server keeps the version the charger
//! confirmed and the entries it sent, so that when tags change each enabled
//! charger gets a differential SendLocalList (version + 1) with only what
//! changed (an entry without idTagInfo removes a tag); a charger that comes
//! back is asked GetLocalListVersion and sent the full list when its
//! version is not the one kept. A charger's updates are computed and sent
//! one at a time (a lock per charger), each from what is stored.

use super::service::{command_error, Engine, EngineError};
use crate::charger::CommandError;
use crate::ocpp::time::{format_ms, now_ms};
use crate::store::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub type Locks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// The configuration keys that say whether and how far a charger takes lists.
pub const CONFIG_KEYS: [&str; 3] = [
    "LocalAuthListEnabled",
    "SendLocalListMaxLength",
    "LocalAuthListMaxLength",
];

/// One list entry: the tag with its idTagInfo.
pub fn entry(tag: &IdTagRecord) -> Value {
    let mut info = json!({ "status": tag.status });
    if let Some(expiry) = tag.expiry_date {
        info["expiryDate"] = json!(format_ms(expiry));
    }
    if let Some(parent) = &tag.parent_id_tag {
        info["parentIdTag"] = json!(parent);
    }
    json!({ "idTag": tag.id_tag, "idTagInfo": info })
}

fn key(entry: &Value) -> String {
    entry["idTag"].as_str().unwrap_or_default().to_uppercase()
}

/// What turns the list `old` into `new`: changed and added entries, and
/// removed tags as entries without idTagInfo.
pub fn differential(old: &[Value], new: &[Value]) -> Vec<Value> {
    let before: HashMap<String, &Value> = old.iter().map(|e| (key(e), e)).collect();
    let after: HashSet<String> = new.iter().map(key).collect();
    let mut update: Vec<Value> = new
        .iter()
        .filter(|e| before.get(&key(e)) != Some(e))
        .cloned()
        .collect();
    update.extend(
        old.iter()
            .filter(|e| !after.contains(&key(e)))
            .map(|e| json!({ "idTag": e["idTag"] })),
    );
    update
}

/// The outcome of one SendLocalList, as kept.
fn apply_answer(
    list: &mut LocalListRecord,
    answer: &Result<Value, CommandError>,
    version: i64,
    entries: &[Value],
) {
    let now = now_ms();
    list.updated_at = now;
    match answer {
        Ok(a) => match a["status"].as_str().unwrap_or_default() {
            "Accepted" => {
                list.version = version;
                list.entries = Value::Array(entries.to_vec()).to_string();
                list.sync_state = LIST_SYNCED.into();
                list.last_error = None;
                list.synced_at = Some(now);
            }
            "NotSupported" => {
                list.sync_state = LIST_NOT_SUPPORTED.into();
                list.last_error = Some("the charger answered NotSupported".into());
            }
            other => {
                list.sync_state = LIST_FAILED.into();
                list.last_error = Some(format!("the charger answered {other}"));
            }
        },
        Err(e @ (CommandError::Offline | CommandError::Timeout | CommandError::ConnectionLost)) => {
            list.sync_state = LIST_PENDING.into();
            list.last_error = Some(e.to_string());
        }
        Err(e) => {
            list.sync_state = LIST_FAILED.into();
            list.last_error = Some(e.to_string());
        }
    }
}

impl Engine {
    fn list_lock(&self, charger_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.list_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(charger_id.to_owned())
            .or_default()
            .clone()
    }

    /// The list a charger should hold now.
    async fn desired_list(&self, max_length: i64) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .store
            .local_list_tags(max_length)
            .await?
            .iter()
            .map(entry)
            .collect())
    }

    /// Sends what the charger's list lacks: the full list (`full`), or a
    /// differential update (nothing when nothing changed; the full list when
    /// the update would not fit, or the charger's version does not match).
    /// Keeps the outcome; returns the charger's error, if any.
    async fn push_list(
        &self,
        list: &mut LocalListRecord,
        mut full: bool,
    ) -> anyhow::Result<Option<CommandError>> {
        let desired = self.desired_list(list.max_length).await?;
        loop {
            let version = list.version.max(0) + 1;
            let (update_type, update) = if full {
                ("Full", desired.clone())
            } else {
                let old: Vec<Value> = serde_json::from_str(&list.entries).unwrap_or_default();
                let update = differential(&old, &desired);
                if update.is_empty() {
                    list.sync_state = LIST_SYNCED.into();
                    list.last_error = None;
                    list.updated_at = now_ms();
                    self.store.save_local_list(list).await?;
                    return Ok(None);
                }
                if update.len() as i64 > list.max_length {
                    ("Full", desired.clone())
                } else {
                    ("Differential", update)
                }
            };
            let answer = self
                .registry
                .call(
                    &list.charger_id,
                    "SendLocalList",
                    json!({ "listVersion": version, "updateType": update_type,
                            "localAuthorizationList": update }),
                )
                .await;
            if update_type == "Differential"
                && answer
                    .as_ref()
                    .is_ok_and(|a| a["status"] == "VersionMismatch")
            {
                tracing::info!(charger = %list.charger_id, "local list version mismatch: sending the full list");
                full = true;
                continue;
            }
            apply_answer(list, &answer, version, &desired);
            self.store.save_local_list(list).await?;
            tracing::info!(charger = %list.charger_id, update_type, version, state = %list.sync_state, "SendLocalList");
            return Ok(answer.err());
        }
    }

    /// Turns server-kept local lists on or off for a charger. On: the
    /// charger is asked (GetConfiguration) whether it takes lists and how
    /// long, and sent the full list. Off: the server stops updating it.
    pub async fn enable_local_list(
        &self,
        charger_id: &str,
        enabled: bool,
    ) -> Result<LocalListRecord, EngineError> {
        if self.store.charger(charger_id).await?.is_none() {
            return Err(EngineError::NotFound(format!(
                "Charger {charger_id} not found"
            )));
        }
        let lock = self.list_lock(charger_id);
        let _turn = lock.lock().await;
        let now = now_ms();
        let mut list = self
            .store
            .local_list(charger_id)
            .await?
            .unwrap_or(LocalListRecord {
                charger_id: charger_id.to_owned(),
                enabled: 0,
                max_length: 0,
                version: 0,
                entries: "[]".into(),
                sync_state: LIST_PENDING.into(),
                last_error: None,
                synced_at: None,
                updated_at: now,
            });
        if !enabled {
            list.enabled = 0;
            list.updated_at = now;
            self.store.save_local_list(&list).await?;
            return Ok(list);
        }
        if self.registry.presence(charger_id).await?.is_none() {
            return Err(EngineError::ChargerOffline(charger_id.to_owned()));
        }
        let config = self
            .registry
            .call(
                charger_id,
                "GetConfiguration",
                json!({ "key": CONFIG_KEYS }),
            )
            .await
            .map_err(|e| command_error(e, charger_id, "give its configuration"))?;
        let value = |name: &str| {
            config["configurationKey"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|k| k["key"] == name)
                .and_then(|k| k["value"].as_str())
                .map(str::to_owned)
        };
        let takes_lists =
            value("LocalAuthListEnabled").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let max_length = ["SendLocalListMaxLength", "LocalAuthListMaxLength"]
            .into_iter()
            .filter_map(|k| value(k)?.trim().parse::<i64>().ok())
            .filter(|n| *n > 0)
            .min();
        let (true, Some(max_length)) = (takes_lists, max_length) else {
            list.enabled = 0;
            list.sync_state = LIST_NOT_SUPPORTED.into();
            list.last_error = Some(format!("GetConfiguration answered {config}"));
            list.updated_at = now_ms();
            self.store.save_local_list(&list).await?;
            return Err(EngineError::Conflict {
                code: "LOCAL_LIST_NOT_SUPPORTED",
                message: format!(
                    "Charger {charger_id} does not take local lists (LocalAuthListEnabled is not true, or no list length is given)"
                ),
                details: json!({ "configuration": config }),
            });
        };
        list.enabled = 1;
        list.max_length = max_length;
        if let Some(e) = self.push_list(&mut list, true).await? {
            return Err(command_error(e, charger_id, "take the local list"));
        }
        if list.sync_state != LIST_SYNCED {
            return Err(EngineError::Conflict {
                code: "CHARGER_REJECTED",
                message: format!("Charger {charger_id} did not take the local list"),
                details: json!({ "syncState": list.sync_state, "lastError": list.last_error }),
            });
        }
        Ok(list)
    }

    /// idTags changed (added, blocked, expiry moved): every enabled list
    /// follows, in the background. Connected chargers get a differential
    /// update; the others are marked `pending` and catch up when they are
    /// back.
    pub fn id_tags_changed(&self) {
        let engine = self.clone();
        tokio::spawn(async move {
            let lists = match engine.store.enabled_local_lists().await {
                Ok(lists) => lists,
                Err(e) => {
                    tracing::warn!("local lists not updated: {e:#}");
                    return;
                }
            };
            for list in lists {
                let charger_id = list.charger_id.clone();
                if let Err(e) = engine.update_local_list(&charger_id).await {
                    tracing::warn!(charger = %charger_id, "local list not updated: {e:#}");
                }
            }
        });
    }

    /// Brings one charger's list up to date with a differential update.
    async fn update_local_list(&self, charger_id: &str) -> anyhow::Result<()> {
        let lock = self.list_lock(charger_id);
        let _turn = lock.lock().await;
        let Some(mut list) = self
            .store
            .local_list(charger_id)
            .await?
            .filter(|l| l.enabled == 1)
        else {
            return Ok(());
        };
        if self.registry.presence(charger_id).await?.is_none() {
            list.sync_state = LIST_PENDING.into();
            list.updated_at = now_ms();
            return self.store.save_local_list(&list).await;
        }
        self.push_list(&mut list, false).await.map(|_| ())
    }

    /// A charger that is back: asked its list version; sent the full list
    /// when it is not the one kept, else what changed meanwhile (if any).
    pub async fn reconcile_local_list(&self, charger_id: &str) -> anyhow::Result<()> {
        // Most chargers have no list kept: one read, and no lock taken.
        let kept = self.store.local_list(charger_id).await?;
        if kept.is_none_or(|l| l.enabled != 1) {
            return Ok(());
        }
        let lock = self.list_lock(charger_id);
        let _turn = lock.lock().await;
        let Some(mut list) = self
            .store
            .local_list(charger_id)
            .await?
            .filter(|l| l.enabled == 1)
        else {
            return Ok(());
        };
        let answer = self
            .registry
            .call(charger_id, "GetLocalListVersion", json!({}))
            .await;
        let charger_version = match answer {
            Ok(a) => a["listVersion"].as_i64(),
            Err(e) => {
                list.sync_state = LIST_PENDING.into();
                list.last_error = Some(e.to_string());
                list.updated_at = now_ms();
                return self.store.save_local_list(&list).await;
            }
        };
        let full = charger_version != Some(list.version);
        if full {
            tracing::info!(charger = %charger_id, ?charger_version, kept = list.version, "local list version differs: sending the full list");
        }
        self.push_list(&mut list, full).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_differential_update_holds_what_changed_and_removals() {
        let a = json!({"idTag": "A", "idTagInfo": {"status": "Accepted"}});
        let b = json!({"idTag": "B", "idTagInfo": {"status": "Accepted"}});
        let b_blocked = json!({"idTag": "b", "idTagInfo": {"status": "Blocked"}});
        let c = json!({"idTag": "C", "idTagInfo": {"status": "Accepted"}});
        assert!(differential(&[a.clone(), b.clone()], &[a.clone(), b.clone()]).is_empty());
        assert_eq!(
            differential(
                &[a.clone(), b.clone()],
                &[a.clone(), b_blocked.clone(), c.clone()]
            ),
            vec![b_blocked, c]
        );
        assert_eq!(
            differential(&[a.clone(), b], &[a]),
            vec![json!({"idTag": "B"})]
        );
    }
}
