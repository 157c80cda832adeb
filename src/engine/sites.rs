//! Site load management: a site is a set of chargers behind one grid
//! connection, with a limit (amperes per phase or kW) that the server shares
//! among the site's running transactions with OCPP 1.6 Smart Charging
//! profiles (§3.13): a TxProfile per transaction, and on every member
//! charger a TxDefaultProfile with a safe limit, which is what a car draws
//! before its TxProfile reaches it.
//!
//! The balancer keeps each site's running transactions in memory (loaded at
//! start-up, then followed from StartTransaction, StopTransaction and
//! MeterValues), so a charger outside any site costs one map lookup per
//! message and no database read. For every transaction it keeps `granted`,
//! the most the charger may be letting the car draw right now (what was
//! last sent, or the safe default before anything was), and the sum of
//! `granted` never exceeds the limit: a re-balance sends the decreases
//! first, counts a decrease only once the charger accepted it, and raises
//! only within what the accepted decreases freed. The profiles go through
//! the profile machinery of [`super::profiles`] (stored, sent, answers kept,
//! sent again when a charger is back).
//!
//! Allocation ([`allocate`]): cars in arrival order; as many as can have the
//! minimum per car get it, the rest are paused (0); the limit is then shared
//! max-min fairly, a car that draws well below what it was given (measured
//! power under 70 % of it) being capped at 120 % of what it draws, so the
//! rest goes to the cars that draw it. A capped car that draws 90 % of what
//! it has is uncapped again.

use super::profiles::{TX_DEFAULT_PROFILE, TX_PROFILE};
use super::service::{Engine, EngineError};
use crate::ocpp::time::now_ms;
use crate::store::*;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// The stack level of the profiles the balancer sets. An operator's
/// TxProfile above it would override the site's limit on that connector.
pub const SITE_STACK_LEVEL: i64 = 8;
/// A capped car drawing this share of what it has wants more: uncapped.
const DRAWING: f64 = 0.9;
/// A car drawing less than this share of what it has is capped.
const IDLE: f64 = 0.7;
/// A capped car may draw this much more than it was measured drawing.
const CAP_HEADROOM: f64 = 1.2;
/// A cap change smaller than this share of the limit does not re-balance.
const SIGNIFICANT: f64 = 0.05;
const EPS: f64 = 1e-6;

/// Site settings as the operator gives them (in the site's unit).
#[derive(Debug, Clone)]
pub struct SiteInput {
    pub id: String,
    pub name: String,
    /// `A` (per phase) or `kW`.
    pub unit: String,
    pub limit: f64,
    pub phases: i64,
    pub voltage: f64,
    pub min_per_car: f64,
    pub safe_default: f64,
}

/// How the site's unit maps to the profiles' chargingRateUnit: a site in
/// amperes uses `A` profiles (per phase), a site in kW uses `W` profiles.
#[derive(Debug, Clone, Copy)]
struct Units {
    amps: bool,
    /// Watts per profile unit.
    watts_per: f64,
}

impl Units {
    fn of(site: &SiteRecord) -> Units {
        if site.unit == "A" {
            Units {
                amps: true,
                watts_per: site.phases as f64 * site.voltage,
            }
        } else {
            Units {
                amps: false,
                watts_per: 1.0,
            }
        }
    }
    /// A site value (A or kW) in profile units (A or W).
    fn profile(&self, site_value: f64) -> f64 {
        if self.amps {
            site_value
        } else {
            site_value * 1000.0
        }
    }
    /// A profile value back in the site's unit.
    fn site(&self, profile_value: f64) -> f64 {
        if self.amps {
            profile_value
        } else {
            profile_value / 1000.0
        }
    }
    /// Rounds down to what a profile carries (0.1 A, 10 W), so rounding
    /// never lifts a sum above the limit.
    fn floor(&self, v: f64) -> f64 {
        let step = if self.amps { 0.1 } else { 10.0 };
        ((v + EPS) / step).floor() * step
    }
    fn rate_unit(&self) -> &'static str {
        if self.amps {
            "A"
        } else {
            "W"
        }
    }
}

/// What each car gets (in `cars`' order, which is arrival order), given the
/// limit, the minimum per car and each car's cap (`None`: it takes what it
/// is given). The sum never exceeds `limit`; a car that gets anything gets
/// at least `min`; the cars that cannot have `min` (the latest arrivals)
/// get 0.
pub fn allocate(limit: f64, min: f64, caps: &[Option<f64>]) -> Vec<f64> {
    let n = caps.len();
    let mut out = vec![0.0; n];
    if n == 0 || limit <= 0.0 {
        return out;
    }
    let served = if min > EPS {
        n.min(((limit + EPS) / min).floor() as usize)
    } else {
        n
    };
    // Max-min fair with caps: the smallest caps are filled first, each at
    // most an equal share of what is left.
    let mut order: Vec<usize> = (0..served).collect();
    order.sort_by(|&a, &b| {
        let ca = caps[a].unwrap_or(f64::INFINITY).max(min);
        let cb = caps[b].unwrap_or(f64::INFINITY).max(min);
        ca.total_cmp(&cb)
    });
    let mut left = limit;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (served - k) as f64;
        let cap = caps[i].unwrap_or(f64::INFINITY).max(min);
        let give = cap.min(share).max(0.0);
        out[i] = give;
        left -= give;
    }
    out
}

/// A running transaction of a site, as the balancer follows it.
#[derive(Debug, Clone)]
struct Car {
    charger_id: String,
    connector_id: i64,
    /// The most the charger may be letting the car draw now (profile units).
    granted: f64,
    /// What the last allocation gave it.
    target: f64,
    /// When `granted` last changed: measurements before the change settled
    /// say nothing about the new limit.
    changed_at: Instant,
    measured_w: Option<f64>,
    /// Its demand: `None` while it draws what it is given.
    cap: Option<f64>,
}

struct SiteState {
    config: SiteRecord,
    chargers: Vec<String>,
    /// Each member's number of connectors (from its StatusNotifications,
    /// at least 1, raised by a transaction on a higher connector).
    connectors: BTreeMap<String, i64>,
    cars: BTreeMap<i64, Car>,
    last_rebalanced: Option<DateTime<Utc>>,
    last_run: Option<Instant>,
    /// When the earliest re-balance already scheduled runs.
    scheduled: Option<Instant>,
}

struct Site {
    /// One re-balance at a time.
    run: tokio::sync::Mutex<()>,
    state: Mutex<SiteState>,
}

impl Site {
    fn state(&self) -> std::sync::MutexGuard<'_, SiteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every site's balancer, and which site each charger belongs to.
#[derive(Clone, Default)]
pub struct Sites {
    members: Arc<RwLock<HashMap<String, String>>>,
    sites: Arc<Mutex<HashMap<String, Arc<Site>>>>,
}

impl Sites {
    fn of_charger(&self, charger_id: &str) -> Option<Arc<Site>> {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        if members.is_empty() {
            return None;
        }
        let site_id = members.get(charger_id)?;
        self.get(site_id)
    }

    fn get(&self, site_id: &str) -> Option<Arc<Site>> {
        self.sites
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(site_id)
            .cloned()
    }
}

/// A new limit for one transaction.
struct Change {
    tx: i64,
    charger_id: String,
    connector_id: i64,
    limit: f64,
}

/// One transaction's allocation, as the site's state shows it.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub transaction_id: i64,
    pub charger_id: String,
    pub connector_id: i64,
    /// What the charger may let the car draw now, in the site's unit.
    pub allocated: f64,
    /// What the last re-balance decided (equal to `allocated` once sent and accepted).
    pub target: f64,
    pub measured_power_w: Option<f64>,
    /// False when the car draws well below what it was given.
    pub drawing: bool,
}

/// A site with its members and the balancer's state.
#[derive(Debug, Clone)]
pub struct SiteView {
    pub site: SiteRecord,
    pub chargers: Vec<String>,
    pub allocations: Vec<Allocation>,
    pub allocated_sum: f64,
    /// The safe default of every connector without a car.
    pub reserved: f64,
    pub last_rebalanced_at: Option<DateTime<Utc>>,
}

impl SiteState {
    /// What connectors without a car hold back: a car that starts there
    /// draws the safe default before its TxProfile arrives.
    fn reserve(&self, units: Units) -> f64 {
        let connectors: i64 = self.connectors.values().sum();
        let idle = (connectors - self.cars.len() as i64).max(0);
        units.profile(self.config.safe_default) * idle as f64
    }
}

fn view(state: &SiteState) -> SiteView {
    let units = Units::of(&state.config);
    let allocations: Vec<Allocation> = state
        .cars
        .iter()
        .map(|(id, c)| Allocation {
            transaction_id: *id,
            charger_id: c.charger_id.clone(),
            connector_id: c.connector_id,
            allocated: units.site(c.granted),
            target: units.site(c.target),
            measured_power_w: c.measured_w,
            drawing: c.cap.is_none(),
        })
        .collect();
    SiteView {
        site: state.config.clone(),
        chargers: state.chargers.clone(),
        allocated_sum: units.site(state.cars.values().map(|c| c.granted).sum()),
        reserved: units.site(state.reserve(units)),
        allocations,
        last_rebalanced_at: state.last_rebalanced,
    }
}

/// The profile the balancer sends (Relative: it starts with the transaction).
fn limit_profile(units: Units, phases: i64, purpose: &str, tx: Option<i64>, limit: f64) -> Value {
    let mut period = json!({ "startPeriod": 0, "limit": limit });
    if units.amps {
        period["numberPhases"] = json!(phases);
    }
    let mut profile = json!({
        "stackLevel": SITE_STACK_LEVEL,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative",
        "chargingSchedule": { "chargingRateUnit": units.rate_unit(), "chargingSchedulePeriod": [period] }
    });
    if let Some(tx) = tx {
        profile["transactionId"] = json!(tx);
    }
    profile
}

impl Engine {
    /// Reads the sites, their members and the members' open transactions
    /// (once, at start-up), and re-balances each site that has any.
    pub async fn load_sites(&self) -> anyhow::Result<()> {
        let members = self.store.site_chargers().await?;
        for site in self.store.sites().await? {
            let chargers: Vec<String> = members
                .iter()
                .filter(|m| m.site_id == site.id)
                .map(|m| m.charger_id.clone())
                .collect();
            let mut cars = BTreeMap::new();
            for charger_id in &chargers {
                self.load_cars(&site, charger_id, &mut cars).await?;
            }
            let busy = !cars.is_empty();
            let id = site.id.clone();
            let connectors = self.connector_counts(&chargers).await?;
            self.install_site(site, chargers, connectors, cars);
            if busy {
                if let Some(s) = self.sites.get(&id) {
                    self.schedule(&s, Duration::ZERO);
                }
            }
        }
        Ok(())
    }

    /// A charger's open transactions as cars: each is taken to be allowed
    /// what its stored site TxProfile says, or the safe default.
    async fn load_cars(
        &self,
        site: &SiteRecord,
        charger_id: &str,
        cars: &mut BTreeMap<i64, Car>,
    ) -> anyhow::Result<()> {
        let units = Units::of(site);
        let profiles = self.store.charging_profiles_of(charger_id).await?;
        for tx in self.store.open_transactions(charger_id).await? {
            let sent = profiles
                .iter()
                .find(|p| {
                    p.purpose == TX_PROFILE
                        && p.stack_level == SITE_STACK_LEVEL
                        && p.transaction_id == Some(tx.id)
                })
                .and_then(|p| serde_json::from_str::<Value>(&p.profile).ok())
                .and_then(|v| v["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"].as_f64());
            let granted = sent.unwrap_or(units.profile(site.safe_default));
            cars.insert(
                tx.id,
                Car {
                    charger_id: charger_id.to_owned(),
                    connector_id: tx.connector_id,
                    granted,
                    target: granted,
                    changed_at: Instant::now(),
                    measured_w: tx.power_w_last,
                    cap: None,
                },
            );
        }
        Ok(())
    }

    /// Each charger's number of connectors, from its StatusNotifications.
    async fn connector_counts(&self, chargers: &[String]) -> anyhow::Result<BTreeMap<String, i64>> {
        let mut counts = BTreeMap::new();
        for c in chargers {
            let n = self
                .store
                .connectors(c)
                .await?
                .iter()
                .filter(|s| s.connector_id > 0)
                .count()
                .max(1);
            counts.insert(c.clone(), n as i64);
        }
        Ok(counts)
    }

    fn install_site(
        &self,
        config: SiteRecord,
        chargers: Vec<String>,
        connectors: BTreeMap<String, i64>,
        cars: BTreeMap<i64, Car>,
    ) {
        {
            let mut members = self
                .sites
                .members
                .write()
                .unwrap_or_else(|e| e.into_inner());
            members.retain(|_, s| *s != config.id);
            for c in &chargers {
                members.insert(c.clone(), config.id.clone());
            }
        }
        let mut sites = self.sites.sites.lock().unwrap_or_else(|e| e.into_inner());
        match sites.get(&config.id) {
            Some(site) => {
                let mut st = site.state();
                st.config = config;
                st.chargers = chargers;
                st.connectors = connectors;
                st.cars = cars;
            }
            None => {
                sites.insert(
                    config.id.clone(),
                    Arc::new(Site {
                        run: tokio::sync::Mutex::new(()),
                        state: Mutex::new(SiteState {
                            config,
                            chargers,
                            connectors,
                            cars,
                            last_rebalanced: None,
                            last_run: None,
                            scheduled: None,
                        }),
                    }),
                );
            }
        }
    }

    /// Creates or updates a site. An update re-sends the safe default to
    /// the members when it changed, and re-balances. True when created.
    pub async fn put_site(&self, input: SiteInput) -> Result<(SiteView, bool), EngineError> {
        let now = now_ms();
        let before = self.store.site(&input.id).await?;
        let stored = self
            .store
            .upsert_site(&SiteRecord {
                id: input.id.clone(),
                name: input.name,
                unit: input.unit,
                limit_value: input.limit,
                phases: input.phases,
                voltage: input.voltage,
                min_per_car: input.min_per_car,
                safe_default: input.safe_default,
                created_at: now,
                updated_at: now,
            })
            .await?;
        let site = match self.sites.get(&stored.id) {
            Some(site) => site,
            None => {
                self.install_site(stored.clone(), Vec::new(), BTreeMap::new(), BTreeMap::new());
                self.sites
                    .get(&stored.id)
                    .ok_or_else(|| anyhow::anyhow!("site vanished"))?
            }
        };
        // No re-balance runs while the settings change under it.
        let _run = site.run.lock().await;
        let old_units = Units::of(&site.state().config);
        site.state().config = stored.clone();
        let default_changed = before.as_ref().is_some_and(|b| {
            b.safe_default != stored.safe_default
                || b.unit != stored.unit
                || b.phases != stored.phases
        });
        if default_changed {
            let chargers = site.state().chargers.clone();
            for c in chargers {
                self.send_safe_default(&stored, &c).await?;
            }
        }
        if before.is_some() {
            // A new unit, phases or voltage: what each car may draw is the
            // same power, counted in the new profile unit.
            {
                let (old, new) = (old_units.watts_per, Units::of(&stored).watts_per);
                if old != new {
                    for car in site.state().cars.values_mut() {
                        car.granted = car.granted * old / new;
                        car.target = car.granted;
                        car.cap = None;
                    }
                }
            }
            self.rebalance(&site).await?;
        }
        let view = view(&site.state());
        Ok((view, before.is_none()))
    }

    /// Deletes a site: its members' site profiles are cleared on the
    /// chargers that are connected, and forgotten.
    pub async fn delete_site(&self, id: &str) -> Result<(), EngineError> {
        if self.store.site(id).await?.is_none() {
            return Err(EngineError::NotFound(format!("Site {id} not found")));
        }
        let chargers = self
            .sites
            .get(id)
            .map(|s| s.state().chargers.clone())
            .unwrap_or_default();
        self.store.delete_site(id).await?;
        {
            let mut members = self
                .sites
                .members
                .write()
                .unwrap_or_else(|e| e.into_inner());
            members.retain(|_, s| s != id);
        }
        let removed = self
            .sites
            .sites
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(site) = removed {
            // A re-balance already scheduled finds nothing left to send.
            let _run = site.run.lock().await;
            let mut st = site.state();
            st.cars.clear();
            st.chargers.clear();
        }
        for c in chargers {
            self.clear_site_profiles(&c).await?;
        }
        Ok(())
    }

    /// Sets a site's members. Every charger must exist and belong to no
    /// other site. New members get the safe default (TxDefaultProfile) and
    /// their running transactions join the balance; members left out have
    /// the site's profiles cleared.
    pub async fn set_site_chargers(
        &self,
        id: &str,
        charger_ids: Vec<String>,
    ) -> Result<SiteView, EngineError> {
        let Some(config) = self.store.site(id).await? else {
            return Err(EngineError::NotFound(format!("Site {id} not found")));
        };
        let mut wanted: Vec<String> = Vec::new();
        for c in charger_ids {
            if !wanted.contains(&c) {
                wanted.push(c);
            }
        }
        let members = self.store.site_chargers().await?;
        for c in &wanted {
            if self.store.charger(c).await?.is_none() {
                return Err(EngineError::NotFound(format!("Charger {c} not found")));
            }
            if let Some(other) = members
                .iter()
                .find(|m| &m.charger_id == c && m.site_id != id)
            {
                return Err(EngineError::Conflict {
                    code: "CHARGER_IN_OTHER_SITE",
                    message: format!("Charger {c} belongs to site {}", other.site_id),
                    details: json!({ "field": "chargerIds", "chargerId": c, "siteId": other.site_id }),
                });
            }
        }
        let before: Vec<String> = members
            .iter()
            .filter(|m| m.site_id == id)
            .map(|m| m.charger_id.clone())
            .collect();
        if !self.store.set_site_chargers(id, &wanted, now_ms()).await? {
            return Err(EngineError::Conflict {
                code: "CHARGER_IN_OTHER_SITE",
                message: "A charger was given to another site meanwhile".into(),
                details: json!({ "field": "chargerIds" }),
            });
        }
        let site = match self.sites.get(id) {
            Some(s) => s,
            None => {
                self.install_site(config.clone(), Vec::new(), BTreeMap::new(), BTreeMap::new());
                self.sites
                    .get(id)
                    .ok_or_else(|| anyhow::anyhow!("site vanished"))?
            }
        };
        // Under the re-balance lock: no allocation runs on a half-changed set.
        {
            let _run = site.run.lock().await;
            let mut added = BTreeMap::new();
            for c in wanted.iter().filter(|c| !before.contains(c)) {
                self.load_cars(&config, c, &mut added).await?;
            }
            let connectors = self.connector_counts(&wanted).await?;
            {
                let mut members = self
                    .sites
                    .members
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                members.retain(|_, s| s != id);
                for c in &wanted {
                    members.insert(c.clone(), id.to_owned());
                }
            }
            let mut st = site.state();
            st.chargers = wanted.clone();
            st.connectors = connectors;
            st.cars.retain(|_, car| wanted.contains(&car.charger_id));
            st.cars.extend(added);
        }
        for c in before.iter().filter(|c| !wanted.contains(c)) {
            self.clear_site_profiles(c).await?;
        }
        for c in wanted.iter().filter(|c| !before.contains(c)) {
            self.send_safe_default(&config, c).await?;
        }
        self.rebalance_now(&site).await?;
        let v = view(&site.state());
        Ok(v)
    }

    pub async fn site_view(&self, id: &str) -> Result<SiteView, EngineError> {
        match self.sites.get(id) {
            Some(site) => {
                let v = view(&site.state());
                Ok(v)
            }
            None => Err(EngineError::NotFound(format!("Site {id} not found"))),
        }
    }

    pub async fn site_views(&self) -> Result<Vec<SiteView>, EngineError> {
        let mut sites: Vec<Arc<Site>> = self
            .sites
            .sites
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        sites.sort_by(|a, b| a.state().config.id.cmp(&b.state().config.id));
        Ok(sites.iter().map(|s| view(&s.state())).collect())
    }

    /// The charger's TxDefaultProfile (connector 0: every connector): the
    /// site's safe default. Stored, so it is sent again when the charger is back.
    async fn send_safe_default(&self, site: &SiteRecord, charger_id: &str) -> anyhow::Result<()> {
        let units = Units::of(site);
        let profile = limit_profile(
            units,
            site.phases,
            TX_DEFAULT_PROFILE,
            None,
            units.floor(units.profile(site.safe_default)),
        );
        self.send_site_profile(charger_id, 0, TX_DEFAULT_PROFILE, None, profile)
            .await?;
        Ok(())
    }

    /// Stores and sends one of the balancer's profiles; true when the
    /// charger accepted it.
    async fn send_site_profile(
        &self,
        charger_id: &str,
        connector_id: i64,
        purpose: &str,
        transaction_id: Option<i64>,
        profile: Value,
    ) -> anyhow::Result<bool> {
        let stored = self
            .store
            .upsert_charging_profile(&NewChargingProfile {
                charger_id: charger_id.to_owned(),
                connector_id,
                purpose: purpose.to_owned(),
                stack_level: SITE_STACK_LEVEL,
                transaction_id,
                profile: profile.to_string(),
                at: now_ms(),
            })
            .await?;
        let (kept, _) = self.deliver_profile(stored).await?;
        Ok(kept.status == "accepted")
    }

    /// Clears (ClearChargingProfile by id, on a connected charger) and
    /// forgets the site's profiles of a charger that left its site.
    async fn clear_site_profiles(&self, charger_id: &str) -> anyhow::Result<()> {
        for p in self.store.charging_profiles_of(charger_id).await? {
            if p.stack_level != SITE_STACK_LEVEL {
                continue;
            }
            if let Err(e) = self
                .registry
                .call(charger_id, "ClearChargingProfile", json!({ "id": p.id }))
                .await
            {
                tracing::info!(charger = %charger_id, profile = p.id, "site profile not cleared on the charger: {e}");
            }
            self.store.delete_charging_profile(p.id).await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------- triggers

    /// A StartTransaction accepted on a site's charger: the car draws the
    /// safe default until its TxProfile arrives; the site re-balances now.
    pub(super) fn site_car_started(&self, tx: &TransactionRecord) {
        let Some(site) = self.sites.of_charger(&tx.charger_id) else {
            return;
        };
        {
            let mut st = site.state();
            let units = Units::of(&st.config);
            let default = units.profile(st.config.safe_default);
            let known = st.connectors.entry(tx.charger_id.clone()).or_insert(1);
            *known = (*known).max(tx.connector_id);
            st.cars.entry(tx.id).or_insert(Car {
                charger_id: tx.charger_id.clone(),
                connector_id: tx.connector_id,
                granted: default,
                target: default,
                changed_at: Instant::now(),
                measured_w: None,
                cap: None,
            });
        }
        self.schedule(&site, Duration::ZERO);
    }

    /// A transaction of a site's charger ended: what it had is free.
    pub(super) fn site_car_stopped(&self, charger_id: &str, transaction_id: i64) {
        let Some(site) = self.sites.of_charger(charger_id) else {
            return;
        };
        if site.state().cars.remove(&transaction_id).is_some() {
            self.schedule(&site, Duration::ZERO);
        }
    }

    /// A measured power from MeterValues. A significant change (a car that
    /// stops drawing what it has, or starts drawing it again) re-balances,
    /// at most once per `site_rebalance_interval`.
    pub(super) fn site_power(&self, charger_id: &str, transaction_id: i64, power_w: f64) {
        let Some(site) = self.sites.of_charger(charger_id) else {
            return;
        };
        let interval = self.config.site_rebalance_interval;
        let now = Instant::now();
        let delay = {
            let mut st = site.state();
            let units = Units::of(&st.config);
            let limit = units.profile(st.config.limit_value);
            let min = units.profile(st.config.min_per_car);
            let Some(car) = st.cars.get_mut(&transaction_id) else {
                return;
            };
            car.measured_w = Some(power_w);
            // Readings taken before a new limit settled say nothing about it.
            if now < car.changed_at + interval.min(Duration::from_secs(2)) || car.granted <= EPS {
                return;
            }
            let measured = power_w / units.watts_per;
            let old = car.cap;
            let new = match old {
                None if measured < IDLE * car.granted => Some((measured * CAP_HEADROOM).max(min)),
                Some(_) if measured >= DRAWING * car.granted => None,
                Some(_) if measured < IDLE * car.granted => {
                    Some((measured * CAP_HEADROOM).max(min))
                }
                other => other,
            };
            let significant = match (old, new) {
                (None, None) => false,
                (Some(a), Some(b)) => (a - b).abs() >= SIGNIFICANT * limit,
                _ => true,
            };
            if !significant {
                return;
            }
            car.cap = new;
            st.last_run
                .map(|t| (t + interval).saturating_duration_since(now))
                .unwrap_or(Duration::ZERO)
        };
        self.schedule(&site, delay);
    }

    /// A charger is back (booted, or reconnected): its stored profiles were
    /// sent again; its site re-balances, so what could not reach it goes now.
    pub(super) fn site_charger_back(&self, charger_id: &str) {
        if let Some(site) = self.sites.of_charger(charger_id) {
            self.schedule(&site, Duration::ZERO);
        }
    }

    /// Runs a re-balance after `delay`, unless one already runs as early.
    fn schedule(&self, site: &Arc<Site>, delay: Duration) {
        let due = Instant::now() + delay;
        {
            let mut st = site.state();
            if st.scheduled.is_some_and(|t| t <= due) {
                return;
            }
            st.scheduled = Some(due);
        }
        let engine = self.clone();
        let site = site.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let _run = site.run.lock().await;
            {
                let mut st = site.state();
                if st.scheduled.is_some_and(|t| t <= Instant::now()) {
                    st.scheduled = None;
                }
            }
            if let Err(e) = engine.rebalance(&site).await {
                let id = site.state().config.id.clone();
                tracing::warn!(site = %id, "site not re-balanced: {e:#}");
            }
        });
    }

    async fn send_change(&self, units: Units, phases: i64, c: &Change) -> anyhow::Result<bool> {
        let profile = limit_profile(units, phases, TX_PROFILE, Some(c.tx), c.limit);
        self.send_site_profile(
            &c.charger_id,
            c.connector_id,
            TX_PROFILE,
            Some(c.tx),
            profile,
        )
        .await
    }

    async fn rebalance_now(&self, site: &Arc<Site>) -> anyhow::Result<()> {
        let _run = site.run.lock().await;
        self.rebalance(site).await
    }

    /// Computes every car's share and sends what changed: decreases first
    /// (each counted once accepted), then increases within what is free.
    /// The caller holds the site's `run` lock.
    async fn rebalance(&self, site: &Arc<Site>) -> anyhow::Result<()> {
        let (units, phases, limit, decreases) = {
            let mut st = site.state();
            st.last_run = Some(Instant::now());
            let units = Units::of(&st.config);
            let limit = units.profile(st.config.limit_value);
            let min = units.profile(st.config.min_per_car);
            let caps: Vec<Option<f64>> = st.cars.values().map(|c| c.cap).collect();
            let reserve = st.reserve(units);
            let shares = allocate((limit - reserve).max(0.0), min, &caps);
            let mut decreases = Vec::new();
            for ((tx, car), share) in st.cars.iter_mut().zip(shares) {
                car.target = units.floor(share);
                if car.target < car.granted - EPS {
                    decreases.push(Change {
                        tx: *tx,
                        charger_id: car.charger_id.clone(),
                        connector_id: car.connector_id,
                        limit: car.target,
                    });
                }
            }
            (units, st.config.phases, limit, decreases)
        };
        let answers = futures_util::future::join_all(
            decreases.iter().map(|c| self.send_change(units, phases, c)),
        )
        .await;
        {
            let mut st = site.state();
            for (c, accepted) in decreases.iter().zip(answers) {
                match accepted {
                    Ok(true) => {
                        if let Some(car) = st.cars.get_mut(&c.tx) {
                            car.granted = c.limit;
                            car.changed_at = Instant::now();
                        }
                    }
                    Ok(false) => {
                        tracing::info!(charger = %c.charger_id, transaction = c.tx, "a site decrease was not accepted; its share stays counted")
                    }
                    Err(e) => {
                        tracing::warn!(charger = %c.charger_id, "site decrease not sent: {e:#}")
                    }
                }
            }
        }
        // Raises only within what is free now: counted before they are
        // sent, so the sum allowed never passes the limit.
        let increases = {
            let mut st = site.state();
            let mut free =
                limit - st.reserve(units) - st.cars.values().map(|c| c.granted).sum::<f64>();
            let mut increases = Vec::new();
            for (tx, car) in st.cars.iter_mut() {
                if car.target > car.granted + EPS && free > EPS {
                    let raised = units.floor(car.target.min(car.granted + free));
                    if raised > car.granted + EPS {
                        free -= raised - car.granted;
                        car.granted = raised;
                        car.changed_at = Instant::now();
                        increases.push(Change {
                            tx: *tx,
                            charger_id: car.charger_id.clone(),
                            connector_id: car.connector_id,
                            limit: raised,
                        });
                    }
                }
            }
            increases
        };
        for (c, r) in increases.iter().zip(
            futures_util::future::join_all(
                increases.iter().map(|c| self.send_change(units, phases, c)),
            )
            .await,
        ) {
            if let Err(e) = r {
                tracing::warn!(charger = %c.charger_id, "site increase not sent: {e:#}");
            }
        }
        site.state().last_rebalanced = Some(now_ms());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::allocate;

    #[test]
    fn equal_shares_when_every_car_draws() {
        assert_eq!(allocate(32.0, 6.0, &[None, None]), vec![16.0, 16.0]);
    }

    #[test]
    fn cars_that_cannot_have_the_minimum_are_paused() {
        let a = allocate(20.0, 8.0, &[None, None, None]);
        assert_eq!(a, vec![10.0, 10.0, 0.0]);
    }

    #[test]
    fn what_a_car_does_not_draw_goes_to_the_others() {
        let a = allocate(32.0, 6.0, &[Some(4.0), None, None]);
        // The capped car keeps the minimum; the rest is shared.
        assert_eq!(a, vec![6.0, 13.0, 13.0]);
        let a = allocate(30.0, 0.0, &[Some(5.0), Some(50.0), None]);
        assert_eq!(a, vec![5.0, 12.5, 12.5]);
    }

    #[test]
    fn the_sum_never_exceeds_the_limit() {
        for n in 0..12 {
            for limit in [0.0, 5.0, 16.0, 32.0, 63.0, 100.0] {
                let caps: Vec<Option<f64>> = (0..n)
                    .map(|i| if i % 3 == 0 { Some(i as f64) } else { None })
                    .collect();
                let a = allocate(limit, 6.0, &caps);
                let sum: f64 = a.iter().sum();
                assert!(sum <= limit + 1e-9, "{limit} {a:?}");
                assert!(a.iter().all(|x| *x == 0.0 || *x >= 6.0 - 1e-9), "{a:?}");
            }
        }
    }
}
