//! Simulated time. A charger's clock runs `speed` times faster than the wall
//! clock, so `--speed 60` turns an hour of charging into a minute while every
//! timestamp the charger sends stays consistent with the energy it reports.
//!
//! Real time is read from `tokio::time::Instant`, so tests that pause Tokio's
//! clock drive simulated time deterministically too.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    origin_real: Instant,
    origin_sim: DateTime<Utc>,
    speed: f64,
}

impl SimClock {
    /// A clock that reads `start` now and runs `speed` times faster than real time.
    pub fn new(start: DateTime<Utc>, speed: f64) -> Self {
        assert!(speed > 0.0 && speed.is_finite(), "speed must be positive");
        SimClock {
            origin_real: Instant::now(),
            origin_sim: start,
            speed,
        }
    }

    /// A clock that starts at the wall-clock time.
    pub fn starting_now(speed: f64) -> Self {
        Self::new(Utc::now(), speed)
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.at(Instant::now())
    }

    /// The simulated time at a given real instant.
    pub fn at(&self, real: Instant) -> DateTime<Utc> {
        let real_elapsed = real.saturating_duration_since(self.origin_real);
        let sim = real_elapsed.as_secs_f64() * self.speed;
        self.origin_sim + chrono::Duration::microseconds((sim * 1e6) as i64)
    }

    /// How long to wait in real time for `sim` to pass in simulated time.
    pub fn real(&self, sim: Duration) -> Duration {
        Duration::from_secs_f64(sim.as_secs_f64() / self.speed)
    }

    /// The real instant at which `sim_secs` simulated seconds from now will have passed.
    pub fn deadline_in(&self, sim_secs: f64) -> Instant {
        Instant::now() + self.real(Duration::from_secs_f64(sim_secs.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_accelerated_clock_runs_speed_times_faster() {
        let start = Utc::now();
        let clock = SimClock::new(start, 60.0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let elapsed = clock.now() - start;
        assert_eq!(elapsed.num_seconds(), 3600);
        assert_eq!(
            clock.real(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }
}
