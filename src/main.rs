//! The `csms` binary: `csms` (or `csms serve`) runs the server; `csms token`
//! prints a bearer token; `csms user` creates a person who logs in (an
//! operator for the console); `csms charger` provisions a charger.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a charger's message is
/// allocated on one thread and often freed on another (the store's writer),
/// and glibc's malloc spent a fifth of the server's time in its arena locks
/// and consolidation under load (measured with perf); mimalloc frees to the
/// owning thread's heap without a lock.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use csms::config::{parse_duration, Config, LogFormat};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "csms",
    version,
    about = "Charging station management system (OCPP 1.6J)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a bearer token for a user, for operators and scripts.
    Token {
        /// The user id the token is for (its `sub`); need not be stored.
        #[arg(long)]
        user: String,
        /// The role the token carries: a driver, or an operator (admin).
        #[arg(long, default_value = "driver", value_parser = ["driver", "admin"])]
        role: String,
        /// Token lifetime.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Create a person who logs in with email and password (or update the
    /// one with that email): an operator (admin) for the console at `/`.
    User {
        /// The email they log in with.
        #[arg(long)]
        email: String,
        /// Their password, at least 8 characters; read from CSMS_USER_PASSWORD if set.
        #[arg(long, env = "CSMS_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// Their role: an operator (admin) or a driver.
        #[arg(long, default_value = "admin", value_parser = ["driver", "admin"])]
        role: String,
        /// Their display name (the email's local part when not given).
        #[arg(long)]
        name: Option<String>,
    },
    /// Register a charger ahead of its first connection, optionally with a
    /// Basic-auth password (OCPP security profile 1/2).
    Charger {
        /// The charger's identity, the last segment of its OCPP URL.
        #[arg(long)]
        id: String,
        /// The charger's AuthorizationKey; read from CSMS_CHARGER_PASSWORD if set.
        #[arg(long, env = "CSMS_CHARGER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Its registration status: Accepted chargers are served at once,
        /// Pending ones wait for an operator, Rejected ones are refused.
        #[arg(long, value_parser = ["Accepted", "Pending", "Rejected"])]
        registration: Option<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CSMS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr);
    match cli.config.log_format {
        // One object per line, with the fields of every span it is in (the
        // charger, the HTTP request) flattened beside the message's own.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => logs.init(),
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            csms::app::Application::build(cli.config)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Token { user, role, ttl } => {
            let store = csms::store::connect(&cli.config.database_url).await?;
            let keys =
                csms::api::auth::JwtKeys::load(cli.config.jwt_secret.as_deref(), store.as_ref())
                    .await?;
            println!("{}", keys.issue(&user, &role, ttl)?);
            Ok(())
        }
        Command::User {
            email,
            password,
            role,
            name,
        } => {
            let email = email.trim().to_lowercase();
            anyhow::ensure!(
                email.contains('@') && email.len() <= 254,
                "--email {email:?} is not an email address"
            );
            anyhow::ensure!(
                password.chars().count() >= 8 && password.len() <= 1024,
                "--password must be at least 8 characters"
            );
            let store = csms::store::connect(&cli.config.database_url).await?;
            let existing = store.user_by_email(&email).await?;
            let name = name
                .or_else(|| existing.as_ref().map(|u| u.name.clone()))
                .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
            let hash =
                tokio::task::spawn_blocking(move || csms::api::auth::hash_user_password(&password))
                    .await??;
            let user = csms::store::UserRecord {
                id: existing
                    .as_ref()
                    .map(|u| u.id.clone())
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                email: Some(email.clone()),
                name,
                role: role.clone(),
                password_hash: Some(hash),
                battery_capacity_wh: None,
                created_at: existing
                    .map(|u| u.created_at)
                    .unwrap_or_else(csms::ocpp::time::now_ms),
            };
            store.upsert_user(&user).await?;
            println!("user {} ({email}, {role}) saved", user.id);
            Ok(())
        }
        Command::Charger {
            id,
            password,
            registration,
        } => {
            csms::charger::handshake::identity_from_path(&format!("/ocpp/{id}"))
                .map_err(anyhow::Error::msg)?;
            let store = csms::store::connect(&cli.config.database_url).await?;
            let registration = registration
                .as_deref()
                .and_then(csms::store::RegistrationStatus::parse);
            let hash = password.map(|p| Some(csms::charger::auth::hash_password(&p)));
            store.provision_charger(&id, registration, hash).await?;
            println!("charger {id} registered");
            Ok(())
        }
    }
}
