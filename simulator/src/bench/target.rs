//! The server under test as a child process: the csms binary on a fresh
//! database, or this binary's `trivial-server`. Started, waited for
//! (`GET /health`), its resident memory read from `/proc/PID/status`,
//! stopped with SIGTERM and timed, restarted on the same port and database.
//!
//! A separate process for each server, never a task in the bench's own
//! process: its memory is then its own, it shuts down as it would in
//! production, and it competes with the load generator for the cores the
//! way a real deployment on one machine would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::api::Api;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Csms,
    Trivial,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Csms => "csms",
            ServerKind::Trivial => "trivial",
        }
    }
}

/// How a SIGTERM ended.
pub struct Terminated {
    pub seconds: f64,
    pub killed: bool,
    pub exit_code: Option<i32>,
}

pub struct Target {
    pub kind: ServerKind,
    pub port: u16,
    pub api: Api,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Target {
    /// The csms server on `database_url`, with a JWT secret the bench knows.
    pub fn csms(
        bin: &Path,
        port: u16,
        database_url: &str,
        jwt_secret: &str,
        heartbeat_interval: Duration,
        log: PathBuf,
    ) -> Target {
        let token = super::api::token(jwt_secret, "bench", "admin", Duration::from_secs(86_400));
        let args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--database-url".into(),
            database_url.into(),
            "--jwt-secret".into(),
            jwt_secret.into(),
            "--heartbeat-interval".into(),
            format!("{}s", heartbeat_interval.as_secs().max(1)),
        ];
        Target {
            kind: ServerKind::Csms,
            port,
            api: Api::new(port, Some(token)),
            program: bin.to_path_buf(),
            args,
            log,
            child: None,
        }
    }

    /// This binary's `trivial-server`.
    pub fn trivial(
        sim_bin: &Path,
        port: u16,
        heartbeat_interval: Duration,
        log: PathBuf,
    ) -> Target {
        let args = vec![
            "trivial-server".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--heartbeat-interval".into(),
            format!("{}s", heartbeat_interval.as_secs().max(1)),
        ];
        Target {
            kind: ServerKind::Trivial,
            port,
            api: Api::new(port, None),
            program: sim_bin.to_path_buf(),
            args,
            log,
            child: None,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ocpp", self.port)
    }

    /// Starts the process and waits until `/health` answers; returns how long that took.
    pub async fn start(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        anyhow::ensure!(
            self.child.is_none(),
            "{} is already running",
            self.kind.name()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let started = Instant::now();
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        let deadline = started + limit;
        loop {
            if self.api.healthy().await {
                return Ok(started.elapsed());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "{} exited ({status}) before /health answered; its log ends:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer /health within {limit:?}; its log ends:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .with_context(|| format!("{} is not running", self.kind.name()))
    }

    /// Resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")
    }

    /// SIGTERM, then waits up to `limit` for the process to exit (SIGKILL after).
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<Terminated> {
        let pid = self.pid()?;
        let mut child = self.child.take().expect("pid implies a child");
        let started = Instant::now();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
            bail!("SIGTERM to {pid}: {}", std::io::Error::last_os_error());
        }
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => Ok(Terminated {
                seconds: started.elapsed().as_secs_f64(),
                killed: false,
                exit_code: status?.code(),
            }),
            Err(_) => {
                tracing::warn!(
                    "{} did not exit within {limit:?} of SIGTERM: killed",
                    self.kind.name()
                );
                child.kill().await?;
                Ok(Terminated {
                    seconds: started.elapsed().as_secs_f64(),
                    killed: true,
                    exit_code: None,
                })
            }
        }
    }

    /// Stops the server if it runs (not measured).
    pub async fn stop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.terminate(Duration::from_secs(30)).await {
                tracing::warn!("stopping {}: {e:#}", self.kind.name());
            }
        }
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A port free on loopback now (the OS picks it; the server binds it next).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
