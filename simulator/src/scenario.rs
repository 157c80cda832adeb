//! Scenarios: what a driver (and the world around the charger) does, step by
//! step. The built-in scenarios and scenario files are the same thing, a list
//! of [`Step`]s, so everything a built-in one does can be written in a file.
//!
//! The file format is line based, one step per line, `#` starts a comment.
//! Durations (`30s`, `10m`, `2h`, `500ms`) are simulated time, except the
//! `timeout` of `await`, which is real time because it waits for the server
//! or a person. See `simulator/README.md` for the full list.
//!
//! ```text
//! plug 1 soc=20 capacity=60
//! tag 1 TAG-1
//! await charging 1
//! wait 30m
//! outage 10m
//! wait 20m
//! tag 1 TAG-1
//! await stopped 1
//! unplug 1
//! ```

use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;

use crate::charger::{ChargerHandle, ChargerView, Command};
use crate::clock::SimClock;
use crate::vehicle::{Vehicle, VehicleModel};

/// A vehicle to plug in: its model and state of charge at arrival.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VehicleSpec {
    pub model: VehicleModel,
    pub soc: f64,
}

impl Default for VehicleSpec {
    fn default() -> Self {
        VehicleSpec {
            model: VehicleModel::default(),
            soc: 20.0,
        }
    }
}

/// What to wait for with `await`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Connected and BootNotification accepted.
    Registered,
    /// The connector's transaction has a transactionId from the server.
    Charging(u32),
    /// No transaction on the connector.
    Stopped(u32),
    /// The connector's vehicle is full (SoC 100).
    Full(u32),
    /// At least this many sessions acknowledged as stopped.
    Sessions(u32),
    /// Connected, registered and nothing left to send.
    Idle,
}

impl Condition {
    pub fn holds(&self, v: &ChargerView) -> bool {
        let conn = |c: &u32| v.connector(*c);
        match self {
            Condition::Registered => v.connected && v.accepted,
            Condition::Charging(c) => conn(c).is_some_and(|c| c.transaction_id.is_some()),
            Condition::Stopped(c) => conn(c).is_some_and(|c| !c.in_transaction),
            Condition::Full(c) => conn(c).is_some_and(|c| c.soc.is_some_and(|s| s >= 100.0)),
            Condition::Sessions(n) => v.sessions_finished >= *n,
            Condition::Idle => v.idle(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Let simulated time pass.
    Wait(Duration),
    /// Wait (real time, at most `timeout`) until a condition holds.
    Await {
        condition: Condition,
        timeout: Duration,
    },
    Plug {
        connector: u32,
        vehicle: VehicleSpec,
    },
    Tag {
        connector: u32,
        id_tag: String,
    },
    Unplug {
        connector: u32,
    },
    Stop {
        connector: u32,
        reason: String,
    },
    /// Network outage for a simulated duration.
    Outage(Duration),
    LoseAnswer {
        reuse_id: bool,
    },
    PowerCycle,
    MeterReset {
        connector: u32,
    },
    Fault {
        connector: u32,
        error_code: String,
    },
    SendRaw(String),
    /// The standard set of malformed frames ([`MALFORMED`]).
    Malformed,
}

/// Frames a central system must survive (OCPP-J 1.6 §4): each probe's answer
/// lands in the summary. The comment says what the CSMS contract expects.
pub const MALFORMED: &[&str] = &[
    "this is not json",                   // dropped: no readable id
    r#"{"not":"an array"}"#,              // dropped: no readable id
    r#"[2,"probe-3","Heartbeat"]"#,       // ProtocolError: no payload
    r#"[2,"probe-4","FlyToTheMoon",{}]"#, // NotImplemented
    r#"[2,"probe-5","StatusNotification",{"connectorId":1,"errorCode":"NoError"}]"#, // missing status
    r#"[2,"probe-6","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Sleeping"}]"#, // PropertyConstraintViolation
    r#"[2,"probe-7","StartTransaction",{"connectorId":1,"idTag":"X","meterStart":"abc","timestamp":"2026-01-01T00:00:00.000Z"}]"#, // TypeConstraintViolation
    r#"[9,"probe-8","Heartbeat",{}]"#, // ignored: unknown MessageTypeId
    r#"[3,"no-such-call",{}]"#,        // dropped: answers nothing
];

/// The built-in scenarios of `csms-sim run --scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Builtin {
    /// Card first, then plug in, charge, card again to stop, unplug.
    Normal,
    /// Plug in first, then present the card.
    PlugFirst,
    /// Plug in and wait for the server's RemoteStartTransaction, then for its
    /// RemoteStopTransaction.
    Remote,
    /// A network outage mid-transaction: messages queue and are replayed.
    Outage,
    /// The answer to StartTransaction is lost; it is sent again with the same id.
    LostAnswer,
    /// As lost-answer, but the retransmission gets a new message id.
    LostAnswerNewId,
    /// Power loss and reboot mid-session.
    Reboot,
    /// The energy register resets to 0 mid-session.
    MeterReset,
    /// A normal session from a charger whose clock is off (see --clock-skew).
    ClockSkew,
    /// Malformed frames, then a normal session to show the connection survived.
    Malformed,
    /// Only boot and heartbeat; the server drives everything (remote commands).
    Idle,
}

/// Parameters of the built-in scenarios.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub connector: u32,
    pub id_tag: String,
    pub vehicle: VehicleSpec,
    /// Simulated charging time.
    pub charge_for: Duration,
    /// Simulated outage length (outage scenario).
    pub outage: Duration,
    /// Real time to wait for the server (remote scenario, idle scenario).
    pub server_timeout: Duration,
}

impl Default for SessionPlan {
    fn default() -> Self {
        SessionPlan {
            connector: 1,
            id_tag: "TAG-0001".into(),
            vehicle: VehicleSpec::default(),
            charge_for: Duration::from_secs(30 * 60),
            outage: Duration::from_secs(10 * 60),
            server_timeout: Duration::from_secs(300),
        }
    }
}

const AWAIT: Duration = Duration::from_secs(60);

impl Builtin {
    pub fn steps(self, p: &SessionPlan) -> Vec<Step> {
        use Step::*;
        let c = p.connector;
        let tag = || Tag {
            connector: c,
            id_tag: p.id_tag.clone(),
        };
        let plug = || Plug {
            connector: c,
            vehicle: p.vehicle,
        };
        let wait_for = |condition| Await {
            condition,
            timeout: AWAIT,
        };
        let half = p.charge_for / 2;
        // Card, plug, charge for `first`, the fault steps, charge for `second`, card, unplug.
        let session = |middle: Vec<Step>, first: Duration, second: Duration| {
            let mut s = vec![tag(), plug(), wait_for(Condition::Charging(c)), Wait(first)];
            s.extend(middle);
            s.extend([
                Wait(second),
                tag(),
                wait_for(Condition::Stopped(c)),
                Unplug { connector: c },
                wait_for(Condition::Sessions(1)),
            ]);
            s
        };
        match self {
            Builtin::Normal | Builtin::ClockSkew => session(vec![], p.charge_for, Duration::ZERO),
            Builtin::PlugFirst => {
                let mut s = session(vec![], p.charge_for, Duration::ZERO);
                s.swap(0, 1);
                s
            }
            Builtin::Remote => vec![
                plug(),
                Await {
                    condition: Condition::Charging(c),
                    timeout: p.server_timeout,
                },
                Await {
                    condition: Condition::Stopped(c),
                    timeout: p.server_timeout,
                },
                Unplug { connector: c },
                wait_for(Condition::Sessions(1)),
            ],
            Builtin::Outage => session(
                vec![Outage(p.outage), wait_for(Condition::Idle)],
                half,
                half,
            ),
            Builtin::LostAnswer | Builtin::LostAnswerNewId => {
                let reuse_id = self == Builtin::LostAnswer;
                let mut s = vec![LoseAnswer { reuse_id }];
                s.extend(session(vec![], p.charge_for, Duration::ZERO));
                s
            }
            Builtin::Reboot => vec![
                tag(),
                plug(),
                wait_for(Condition::Charging(c)),
                Wait(half),
                PowerCycle,
                wait_for(Condition::Sessions(1)),
                wait_for(Condition::Idle),
                Unplug { connector: c },
            ],
            Builtin::MeterReset => session(vec![MeterReset { connector: c }], half, half),
            Builtin::Malformed => {
                let mut s = vec![Malformed, wait_for(Condition::Idle)];
                s.extend(session(vec![], p.charge_for, Duration::ZERO));
                s
            }
            Builtin::Idle => vec![Wait(Duration::from_secs(u64::MAX / 4))],
        }
    }
}

/// Runs steps against a charger. Returns when the last step is done.
pub async fn run_steps(
    h: &mut ChargerHandle,
    clock: &SimClock,
    steps: &[Step],
) -> anyhow::Result<()> {
    for (n, step) in steps.iter().enumerate() {
        tracing::info!("step {}: {step:?}", n + 1);
        match step.clone() {
            Step::Wait(d) => {
                tokio::time::sleep(clock.real(d).min(Duration::from_secs(86_400 * 365))).await
            }
            Step::Await { condition, timeout } => {
                h.wait_for(timeout, &format!("{condition:?}"), |v| condition.holds(v))
                    .await?;
            }
            Step::Plug { connector, vehicle } => {
                h.send(Command::PlugIn {
                    connector,
                    vehicle: Vehicle::new(vehicle.model, vehicle.soc),
                })
                .await?
            }
            Step::Tag { connector, id_tag } => {
                h.send(Command::PresentIdTag { connector, id_tag }).await?
            }
            Step::Unplug { connector } => h.send(Command::Unplug { connector }).await?,
            Step::Stop { connector, reason } => h.send(Command::Stop { connector, reason }).await?,
            Step::Outage(d) => {
                h.send(Command::Outage {
                    duration: clock.real(d),
                })
                .await?
            }
            Step::LoseAnswer { reuse_id } => h.send(Command::LoseNextAnswer { reuse_id }).await?,
            Step::PowerCycle => h.send(Command::PowerCycle).await?,
            Step::MeterReset { connector } => h.send(Command::ResetMeter { connector }).await?,
            Step::Fault {
                connector,
                error_code,
            } => {
                h.send(Command::Fault {
                    connector,
                    error_code,
                })
                .await?
            }
            Step::SendRaw(text) => h.send(Command::Probe { text }).await?,
            Step::Malformed => {
                for text in MALFORMED {
                    h.send(Command::Probe {
                        text: text.to_string(),
                    })
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// Parses `500ms`, `30s`, `10m`, `1.5h`, `1d` or a plain number of seconds:
/// the server's syntax (the `csms-duration` crate, on `humantime`).
pub fn parse_duration(s: &str) -> Result<Duration, csms_duration::DurationError> {
    csms_duration::parse(s)
}

/// Reads a scenario file (see the module documentation and the README).
pub fn parse_script(text: &str, default_vehicle: VehicleSpec) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        // `send` keeps the rest of the line verbatim, `#` included.
        let line = if raw.trim_start().starts_with("send ") {
            raw.trim()
        } else {
            line
        };
        if line.is_empty() {
            continue;
        }
        let step = parse_line(line, default_vehicle)
            .with_context(|| format!("line {}: {raw:?}", n + 1))?;
        steps.push(step);
    }
    Ok(steps)
}

fn parse_line(line: &str, default_vehicle: VehicleSpec) -> anyhow::Result<Step> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let connector = |i: usize| -> anyhow::Result<u32> {
        args.get(i)
            .context("connector number missing")?
            .parse()
            .context("connector must be a number")
    };
    let named = |key: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    };
    Ok(match verb {
        "wait" => Step::Wait(parse_duration(args.first().context("wait how long?")?)?),
        "await" => {
            let what = *args.first().context("await what?")?;
            let condition = match what {
                "registered" => Condition::Registered,
                "idle" => Condition::Idle,
                "charging" => Condition::Charging(connector(1)?),
                "stopped" => Condition::Stopped(connector(1)?),
                "full" => Condition::Full(connector(1)?),
                "sessions" => Condition::Sessions(connector(1)?),
                other => bail!("unknown condition {other}"),
            };
            let timeout = named("timeout")
                .map(parse_duration)
                .transpose()?
                .unwrap_or(AWAIT);
            Step::Await { condition, timeout }
        }
        "plug" => {
            let mut v = default_vehicle;
            let num = |key: &str, into: &mut f64| -> anyhow::Result<()> {
                if let Some(x) = named(key) {
                    *into = x
                        .parse()
                        .with_context(|| format!("{key} must be a number"))?;
                }
                Ok(())
            };
            num("soc", &mut v.soc)?;
            num("capacity", &mut v.model.capacity_kwh)?;
            num("ac", &mut v.model.max_ac_kw)?;
            num("dc", &mut v.model.max_dc_kw)?;
            Step::Plug {
                connector: connector(0)?,
                vehicle: v,
            }
        }
        "tag" => Step::Tag {
            connector: connector(0)?,
            id_tag: args.get(1).context("which idTag?")?.to_string(),
        },
        "unplug" => Step::Unplug {
            connector: connector(0)?,
        },
        "stop" => Step::Stop {
            connector: connector(0)?,
            reason: args.get(1).unwrap_or(&"Local").to_string(),
        },
        "outage" => Step::Outage(parse_duration(args.first().context("outage how long?")?)?),
        "lose-answer" => Step::LoseAnswer {
            reuse_id: match args.first() {
                None | Some(&"same-id") => true,
                Some(&"new-id") => false,
                Some(other) => bail!("lose-answer takes same-id or new-id, not {other}"),
            },
        },
        "power-cycle" => Step::PowerCycle,
        "meter-reset" => Step::MeterReset {
            connector: connector(0)?,
        },
        "fault" => Step::Fault {
            connector: connector(0)?,
            error_code: args.get(1).context("which errorCode?")?.to_string(),
        },
        "send" => Step::SendRaw(
            line.strip_prefix("send")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        "malformed" => Step::Malformed,
        other => bail!("unknown step {other:?}"),
    })
}

/// A random vehicle for fleets: common battery sizes and an arrival SoC between 10 and 60 %.
pub fn random_vehicle(rng: &mut impl Rng) -> VehicleSpec {
    const MODELS: [(f64, f64, f64); 4] = [
        (40.0, 7.4, 50.0),
        (60.0, 11.0, 100.0),
        (77.0, 11.0, 150.0),
        (100.0, 22.0, 250.0),
    ];
    let (capacity_kwh, max_ac_kw, max_dc_kw) = MODELS[rng.random_range(0..MODELS.len())];
    VehicleSpec {
        model: VehicleModel {
            capacity_kwh,
            max_ac_kw,
            max_dc_kw,
        },
        soc: rng.random_range(10.0..60.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 parsecs").is_err());
        // The server's syntax, from the shared crate: fractions, and overflow
        // as an error.
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("213503982334602d").is_err());
    }

    #[test]
    fn the_example_script_parses() {
        let text = include_str!("../scenarios/outage-and-faults.txt");
        let steps = parse_script(text, VehicleSpec::default()).unwrap();
        assert!(steps.contains(&Step::Outage(Duration::from_secs(600))));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Plug { connector: 1, vehicle } if vehicle.soc == 20.0)));
    }

    #[test]
    fn script_errors_name_the_line() {
        let e = parse_script("wait 1m\nfly 1\n", VehicleSpec::default()).unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let steps = parse_script(
            "send [2,\"x#1\",\"Heartbeat\",{}]\nawait charging 2 timeout=5s",
            VehicleSpec::default(),
        )
        .unwrap();
        assert_eq!(
            steps[0],
            Step::SendRaw(r#"[2,"x#1","Heartbeat",{}]"#.into())
        );
        assert_eq!(
            steps[1],
            Step::Await {
                condition: Condition::Charging(2),
                timeout: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn every_builtin_scenario_ends_its_session() {
        let plan = SessionPlan::default();
        for b in [
            Builtin::Normal,
            Builtin::PlugFirst,
            Builtin::Outage,
            Builtin::LostAnswer,
            Builtin::MeterReset,
            Builtin::Reboot,
        ] {
            let steps = b.steps(&plan);
            assert!(
                steps.iter().any(|s| matches!(
                    s,
                    Step::Await {
                        condition: Condition::Sessions(1),
                        ..
                    }
                )),
                "{b:?}"
            );
        }
    }
}
