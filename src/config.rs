//! Settings, from flags and `CSMS_*` environment variables (a flag wins).
//! Every value is checked here, at start-up, with a message that names it.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnknownChargers {
    /// Register them on their first BootNotification.
    Accept,
    /// Register them as Pending until an operator accepts them.
    Pending,
    /// Refuse identities nobody registered, at the handshake (HTTP 404).
    Reject,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address for HTTP, REST and the OCPP WebSocket endpoint.
    #[arg(long, env = "CSMS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// `sqlite://PATH` or `postgres://...`.
    #[arg(
        long,
        env = "CSMS_DATABASE_URL",
        default_value = "sqlite://csms.db",
        global = true
    )]
    pub database_url: String,

    /// HS256 secret for bearer tokens; generated once and kept in the database when unset.
    #[arg(long, env = "CSMS_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// What to do with charger identities nobody registered.
    #[arg(
        long,
        env = "CSMS_UNKNOWN_CHARGERS",
        value_enum,
        default_value = "accept"
    )]
    pub unknown_chargers: UnknownChargers,

    /// Lifetime of a payment link.
    #[arg(long, env = "CSMS_PAYMENT_LINK_TTL", default_value = "24h", value_parser = parse_duration)]
    pub payment_link_ttl: Duration,

    /// How long a command waits for a charger's answer.
    #[arg(long, env = "CSMS_OCPP_CALL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub ocpp_call_timeout: Duration,

    /// PEM certificate chain; with --tls-key the listener speaks TLS (wss://, https://).
    #[arg(long, env = "CSMS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "CSMS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Heartbeat interval given to accepted chargers in BootNotification.
    #[arg(long, env = "CSMS_HEARTBEAT_INTERVAL", default_value = "300s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Interval given to Pending or Rejected chargers before they boot again.
    #[arg(long, env = "CSMS_BOOT_RETRY_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub boot_retry_interval: Duration,

    /// WebSocket ping interval; a charger silent for two intervals is closed.
    #[arg(long, env = "CSMS_WS_PING_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub ws_ping_interval: Duration,

    /// Largest OCPP-J message accepted, in bytes; larger ones close the connection.
    #[arg(long, env = "CSMS_OCPP_MAX_MESSAGE_BYTES", default_value_t = 65536, value_parser = |v: &str| parse_bytes(v, 1024, 16 << 20))]
    pub max_frame_bytes: usize,

    /// Initial WebSocket read buffer per connection, in bytes.
    #[arg(long, env = "CSMS_WS_READ_BUFFER", default_value_t = 4096, value_parser = |v: &str| parse_bytes(v, 256, 1 << 20))]
    pub ws_read_buffer: usize,

    /// Price per kWh of sessions at stations without a tariff of their own.
    #[arg(long = "default-price-per-kwh", env = "CSMS_DEFAULT_PRICE_PER_KWH", default_value = "165", value_parser = parse_price)]
    pub default_price_micros: i64,

    /// Currency of the default price.
    #[arg(long, env = "CSMS_DEFAULT_CURRENCY", default_value = "NGN", value_parser = parse_currency_arg)]
    pub default_currency: String,

    /// How long a remote start may take to become a transaction before its session is cancelled.
    #[arg(long, env = "CSMS_REMOTE_START_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub remote_start_timeout: Duration,

    /// How long ending an OCPP session waits for the charger's StopTransaction before answering 202.
    #[arg(long, env = "CSMS_STOP_WAIT", default_value = "5s", value_parser = parse_duration)]
    pub stop_wait: Duration,

    /// Site load management: a significant power change re-balances a site at most once per this interval.
    #[arg(long, env = "CSMS_SITE_REBALANCE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub site_rebalance_interval: Duration,

    /// Lifetime of tokens issued at login and registration.
    #[arg(long, env = "CSMS_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Base URL people reach this server at (pay pages, Stripe return URLs).
    #[arg(long, env = "CSMS_PUBLIC_URL", default_value = "http://localhost:8080")]
    pub public_url: String,

    /// Balance provider per chain, `chain=provider,...` (`ledger` or `evm`); unlisted chains use the ledger.
    #[arg(long, env = "CSMS_BALANCE_PROVIDERS", default_value = "")]
    pub balance_providers: String,

    /// Hold `expectedMaxCost` in the ledger wallet while a session runs, released at its end.
    #[arg(long, env = "CSMS_LEDGER_RESERVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub ledger_reserve: bool,

    /// Ethereum JSON-RPC URL for the `evm` balance provider.
    #[arg(long, env = "CSMS_EVM_RPC_URL")]
    pub evm_rpc_url: Option<String>,

    /// ERC-20 contract whose balance counts; unset reads the native coin.
    #[arg(long, env = "CSMS_EVM_TOKEN_CONTRACT")]
    pub evm_token_contract: Option<String>,

    /// Decimals of that asset (18 for ether).
    #[arg(long, env = "CSMS_EVM_DECIMALS", default_value_t = 18)]
    pub evm_decimals: u32,

    /// Major units of a station's currency one whole token is worth (a decimal).
    #[arg(long, env = "CSMS_EVM_RATE", default_value = "0")]
    pub evm_rate: String,

    /// Time limit of one JSON-RPC balance read.
    #[arg(long, env = "CSMS_EVM_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub evm_timeout: Duration,

    /// Payment-link provider: `local` (this server's pay page) or `stripe`.
    #[arg(long, env = "CSMS_PAYMENT_LINKS", default_value = "local", value_parser = ["local", "stripe"])]
    pub payment_links: String,

    /// Stripe secret key (for `stripe` payment links).
    #[arg(long, env = "CSMS_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Stripe webhook signing secret (`whsec_...`).
    #[arg(long, env = "CSMS_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,

    /// Stripe API base URL.
    #[arg(
        long,
        env = "CSMS_STRIPE_BASE_URL",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_base_url: String,

    /// With several nodes on one PostgreSQL: a node whose heartbeat is older than this counts as gone, with its chargers.
    #[arg(long, env = "CSMS_NODE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub node_timeout: Duration,

    /// Most simultaneous charger connections.
    #[arg(long, env = "CSMS_MAX_CHARGERS", default_value_t = 100_000)]
    pub max_chargers: usize,

    /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
    #[arg(
        long,
        env = "CSMS_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Receivers of outgoing webhooks (http:// or https:// URLs), comma-separated; none when empty.
    #[arg(long, env = "CSMS_WEBHOOK_URLS", default_value = "", value_parser = parse_webhook_urls)]
    pub webhook_urls: WebhookUrls,

    /// Secret that signs outgoing webhooks (`CSMS-Signature`); required with --webhook-urls.
    #[arg(long, env = "CSMS_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// First wait before a failed webhook delivery is retried; it doubles up to an hour, for a day.
    #[arg(long, env = "CSMS_WEBHOOK_RETRY", default_value = "10s", value_parser = parse_duration)]
    pub webhook_retry: Duration,

    /// Browser origins allowed to call the REST API (CORS), comma-separated; none when empty.
    #[arg(long, env = "CSMS_CORS_ORIGINS", default_value = "", value_parser = parse_origins)]
    pub cors_origins: Origins,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The receivers of outgoing webhooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookUrls(pub Vec<String>);

pub fn parse_webhook_urls(text: &str) -> Result<WebhookUrls, String> {
    let mut urls = Vec::new();
    for url in text.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        }
        urls.push(url.to_owned());
    }
    Ok(WebhookUrls(urls))
}

/// Origins (`scheme://host[:port]`) allowed to call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(pub Vec<String>);

/// `https://app.example.com,http://localhost:3000`: each an origin, no path.
pub fn parse_origins(text: &str) -> Result<Origins, String> {
    let mut origins = Vec::new();
    for origin in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .ok_or_else(|| format!("{origin:?} is not an origin (http:// or https://)"))?;
        if rest.is_empty()
            || rest.contains('/')
            || origin.parse::<axum::http::HeaderValue>().is_err()
        {
            return Err(format!(
                "{origin:?} is not an origin like https://app.example.com (no path, no slash)"
            ));
        }
        origins.push(origin.to_owned());
    }
    Ok(Origins(origins))
}

impl Config {
    /// Defaults for an embedded test server: loopback, port 0, the given database.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        // Parse from no arguments so the defaults stay in one place, but do
        // not let the environment of the test run leak in.
        let mut config = Only::try_parse_from(["csms"])
            .expect("defaults parse")
            .config;
        config.listen = "127.0.0.1:0".parse().expect("loopback");
        config.database_url = database_url.into();
        config.jwt_secret = Some("test-secret-test-secret-test-secret".into());
        config.unknown_chargers = UnknownChargers::Accept;
        config.tls_cert = None;
        config.tls_key = None;
        config
    }
}

fn parse_price(text: &str) -> Result<i64, String> {
    crate::engine::money::parse_price_micros(&serde_json::Value::String(text.to_owned()))
        .ok_or_else(|| {
            format!("{text:?} is not a price (a non-negative decimal with at most 6 decimals)")
        })
}

fn parse_currency_arg(text: &str) -> Result<String, String> {
    crate::engine::money::parse_currency(text).map_err(|e| format!("{text:?}: {e}"))
}

/// A byte count within `min..=max`.
pub fn parse_bytes(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("{n} is outside {min}..={max} bytes"));
    }
    Ok(n)
}

/// `500ms`, `30s`, `1.5h`, `24h`, `2d`; a bare number is seconds. The same
/// syntax as the simulator's (the `csms-duration` crate, on `humantime`);
/// too large a value is an error, never a wrap.
pub fn parse_duration(text: &str) -> Result<Duration, csms_duration::DurationError> {
    csms_duration::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        // n * 86_400 used to wrap in u64; now it is an error that says so.
        let e = parse_duration("213503982334602d").unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn origins_are_scheme_and_host_only() {
        assert_eq!(parse_origins("").unwrap(), Origins::default());
        assert_eq!(
            parse_origins("https://app.example.com, http://localhost:3000").unwrap(),
            Origins(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
        assert!(parse_origins("app.example.com").is_err());
        assert!(parse_origins("https://app.example.com/").is_err());
        assert!(parse_origins("https://").is_err());
    }
}
