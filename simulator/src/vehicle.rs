//! Physics: the vehicle's battery and what the charger can give it.
//!
//! A battery takes its maximum power up to [`TAPER_START_SOC`] and then tapers
//! linearly towards a trickle, as lithium-ion packs do in their constant-voltage
//! phase. Energy is integrated from power over simulated time in small steps,
//! SoC follows from energy and never passes 100 %.

use serde::{Deserialize, Serialize};

/// State of charge (percent) above which the accepted power tapers.
pub const TAPER_START_SOC: f64 = 80.0;
/// At 100 % the taper would reach zero and the battery would never fill; real
/// packs keep a small trickle until full. Fraction of max power.
const TRICKLE: f64 = 0.05;
/// Largest integration step in simulated seconds; the taper is smooth, so this
/// keeps the error well below one Wh per step at any realistic power.
const MAX_STEP_S: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VehicleModel {
    pub capacity_kwh: f64,
    pub max_ac_kw: f64,
    pub max_dc_kw: f64,
}

impl Default for VehicleModel {
    fn default() -> Self {
        VehicleModel {
            capacity_kwh: 60.0,
            max_ac_kw: 11.0,
            max_dc_kw: 100.0,
        }
    }
}

/// A vehicle plugged into a connector: its model and how full its battery is.
#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle {
    pub model: VehicleModel,
    stored_wh: f64,
}

impl Vehicle {
    pub fn new(model: VehicleModel, initial_soc: f64) -> Self {
        let soc = initial_soc.clamp(0.0, 100.0);
        Vehicle {
            model,
            stored_wh: model.capacity_kwh * 1000.0 * soc / 100.0,
        }
    }

    pub fn capacity_wh(&self) -> f64 {
        self.model.capacity_kwh * 1000.0
    }

    pub fn soc(&self) -> f64 {
        (self.stored_wh / self.capacity_wh() * 100.0).clamp(0.0, 100.0)
    }

    pub fn is_full(&self) -> bool {
        self.stored_wh >= self.capacity_wh()
    }

    /// The power (W) the battery accepts at its present SoC from a charger of this kind.
    pub fn acceptance_w(&self, kind: PowerKind) -> f64 {
        let max_w = match kind {
            PowerKind::Ac { .. } => self.model.max_ac_kw,
            PowerKind::Dc { .. } => self.model.max_dc_kw,
        } * 1000.0;
        let soc = self.soc();
        if self.is_full() {
            0.0
        } else if soc <= TAPER_START_SOC {
            max_w
        } else {
            let taper = (100.0 - soc) / (100.0 - TAPER_START_SOC);
            max_w * taper.max(TRICKLE)
        }
    }

    /// Charges for `dt_s` simulated seconds with at most `offered_w` from the
    /// charger. Returns the energy delivered (Wh) and the power at the end of the step.
    pub fn charge(&mut self, offered_w: f64, kind: PowerKind, dt_s: f64) -> (f64, f64) {
        let mut left = dt_s.max(0.0);
        let mut delivered = 0.0;
        let mut power = self.acceptance_w(kind).min(offered_w.max(0.0));
        while left > 0.0 {
            let step = left.min(MAX_STEP_S);
            power = self.acceptance_w(kind).min(offered_w.max(0.0));
            let room = self.capacity_wh() - self.stored_wh;
            let e = (power * step / 3600.0).min(room);
            self.stored_wh += e;
            delivered += e;
            left -= step;
        }
        if self.is_full() {
            power = 0.0;
        }
        (delivered, power)
    }
}

/// How the charger delivers power; decides the vehicle's limit and how current is derived.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PowerKind {
    Ac { phases: u8, voltage: f64 },
    Dc { voltage: f64 },
}

impl PowerKind {
    pub fn voltage(&self) -> f64 {
        match *self {
            PowerKind::Ac { voltage, .. } | PowerKind::Dc { voltage } => voltage,
        }
    }

    /// Current per phase (A) for a power (W).
    pub fn current_a(&self, power_w: f64) -> f64 {
        match *self {
            PowerKind::Ac { phases, voltage } => power_w / (voltage * phases.max(1) as f64),
            PowerKind::Dc { voltage } => power_w / voltage,
        }
    }

    /// Power (W) for a current limit (A), as a charging profile in amperes means it.
    pub fn power_w(&self, current_a: f64, phases: Option<u8>) -> f64 {
        match *self {
            PowerKind::Ac { phases: p, voltage } => {
                current_a * voltage * phases.unwrap_or(p).max(1) as f64
            }
            PowerKind::Dc { voltage } => current_a * voltage,
        }
    }
}

/// The charger's hardware: its power per connector and how many connectors it has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChargerModel {
    pub max_power_w: f64,
    pub connectors: u32,
    pub kind: PowerKind,
}

impl Default for ChargerModel {
    /// A common 22 kW three-phase AC wallbox with two sockets.
    fn default() -> Self {
        ChargerModel {
            max_power_w: 22_000.0,
            connectors: 2,
            kind: PowerKind::Ac {
                phases: 3,
                voltage: 230.0,
            },
        }
    }
}

impl ChargerModel {
    pub fn dc(max_power_kw: f64, connectors: u32) -> Self {
        ChargerModel {
            max_power_w: max_power_kw * 1000.0,
            connectors,
            kind: PowerKind::Dc { voltage: 400.0 },
        }
    }
}

/// An energy meter: a register in Wh that only moves forward (except when a
/// fault scenario resets it). OCPP reports the integer part.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Meter {
    register_wh: f64,
}

impl Meter {
    pub fn new(register_wh: u64) -> Self {
        Meter {
            register_wh: register_wh as f64,
        }
    }

    pub fn add(&mut self, wh: f64) {
        if wh > 0.0 {
            self.register_wh += wh;
        }
    }

    /// The integer register value sent in OCPP messages.
    pub fn reading_wh(&self) -> i64 {
        self.register_wh.floor() as i64
    }

    /// Fault injection: the register restarts from zero (meter replaced or reset).
    pub fn reset(&mut self) {
        self.register_wh = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: PowerKind = PowerKind::Ac {
        phases: 3,
        voltage: 230.0,
    };
    const DC: PowerKind = PowerKind::Dc { voltage: 400.0 };

    #[test]
    fn soc_never_goes_above_100() {
        let mut v = Vehicle::new(
            VehicleModel {
                capacity_kwh: 40.0,
                max_ac_kw: 11.0,
                max_dc_kw: 150.0,
            },
            95.0,
        );
        for _ in 0..1000 {
            v.charge(150_000.0, DC, 60.0);
            assert!(v.soc() <= 100.0);
        }
        assert_eq!(v.soc(), 100.0);
        assert!(v.is_full());
        assert_eq!(
            v.charge(150_000.0, DC, 60.0),
            (0.0, 0.0),
            "a full battery takes nothing"
        );
    }

    #[test]
    fn power_is_constant_below_80_and_tapers_above() {
        let model = VehicleModel {
            capacity_kwh: 60.0,
            max_ac_kw: 11.0,
            max_dc_kw: 100.0,
        };
        assert_eq!(Vehicle::new(model, 10.0).acceptance_w(DC), 100_000.0);
        assert_eq!(Vehicle::new(model, 79.0).acceptance_w(DC), 100_000.0);
        let p85 = Vehicle::new(model, 85.0).acceptance_w(DC);
        let p95 = Vehicle::new(model, 95.0).acceptance_w(DC);
        assert!(p85 < 100_000.0 && p95 < p85 && p95 > 0.0, "{p85} {p95}");
        assert_eq!(Vehicle::new(model, 50.0).acceptance_w(AC), 11_000.0);
    }

    #[test]
    fn energy_is_monotonic_and_matches_soc() {
        let mut v = Vehicle::new(VehicleModel::default(), 20.0);
        let mut meter = Meter::new(1_000);
        let mut last = meter.reading_wh();
        let mut total = 0.0;
        for _ in 0..2000 {
            let (e, _) = v.charge(22_000.0, AC, 30.0);
            assert!(e >= 0.0);
            total += e;
            meter.add(e);
            assert!(meter.reading_wh() >= last);
            last = meter.reading_wh();
        }
        // 20 % -> 100 % of 60 kWh is 48 kWh, all of it counted by the meter.
        assert!((total - 48_000.0).abs() < 1.0, "{total}");
        assert_eq!(last, 1_000 + 48_000);
    }

    #[test]
    fn one_long_step_equals_many_short_ones() {
        // Acceleration must not change the physics: an hour in one call or in
        // sixty one-minute calls delivers the same energy.
        let mut a = Vehicle::new(VehicleModel::default(), 30.0);
        let mut b = a.clone();
        let (ea, _) = a.charge(11_000.0, AC, 3600.0);
        let eb: f64 = (0..60).map(|_| b.charge(11_000.0, AC, 60.0).0).sum();
        assert!((ea - 11_000.0).abs() < 1e-6);
        assert!((ea - eb).abs() < 1e-6);
        assert_eq!(a.soc(), b.soc());
    }

    #[test]
    fn the_charger_limit_caps_power() {
        let mut v = Vehicle::new(VehicleModel::default(), 10.0);
        let (e, p) = v.charge(3_680.0, AC, 3600.0);
        assert!((e - 3_680.0).abs() < 1e-6 && p == 3_680.0);
        assert!((AC.current_a(22_080.0) - 32.0).abs() < 1e-9);
        assert_eq!(AC.power_w(16.0, None), 11_040.0);
    }
}
