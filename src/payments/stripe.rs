//! Stripe payment links: a client for Checkout Sessions and verification of
//! Stripe's signed webhooks.
//!
//! What it implements of Stripe's API:
//!
//! - `POST /v1/checkout/sessions`: a one-off `mode=payment` session with one
//!   line item priced inline (`price_data`), form-encoded the way Stripe
//!   takes parameters (`line_items[0][price_data][currency]=ngn`), sent with
//!   `Authorization: Bearer sk_…` and an `Idempotency-Key` so a retried
//!   request never makes a second session.
//! - `GET /v1/checkout/sessions/{id}` and
//!   `POST /v1/checkout/sessions/{id}/expire`.
//! - Webhooks: the `Stripe-Signature: t=…,v1=…` header, an HMAC-SHA256 over
//!   `"{t}.{raw body}"` keyed with the endpoint's signing secret (`whsec_…`),
//!   and the Event object `{id, type, created, data: {object}}`.
//!
//! Checkout Sessions and not Payment Links: a Payment Link never expires,
//! while a session's `expires_at` can be set between 30 minutes and 24 hours
//! after creation, which is what a "pay within N hours" link needs.
//!
//! Amounts are integers in the currency's smallest unit, as in Stripe
//! (cents, kobo; yen for zero-decimal currencies). Stripe has special rules
//! for a few currencies (e.g. HUF and TWD amounts must be divisible by 100)
//! and a minimum charge per currency; those are left to Stripe to enforce and
//! come back as [`StripeError::Api`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// Stripe's API host.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

/// The earliest `expires_at` Stripe accepts, counted from creation.
pub const MIN_EXPIRY_SECS: i64 = 30 * 60;
/// The latest `expires_at` Stripe accepts, counted from creation.
pub const MAX_EXPIRY_SECS: i64 = 24 * 60 * 60;
/// Kept away from both limits, since Stripe measures from when it receives
/// the request, by its own clock, which is not ours.
pub const EXPIRY_MARGIN_SECS: i64 = 60;

/// How old a webhook's timestamp may be, as Stripe's own libraries default to.
pub const DEFAULT_WEBHOOK_TOLERANCE_SECS: i64 = 300;

/// Where Stripe is and how to authenticate.
#[derive(Clone)]
pub struct StripeConfig {
    /// `https://api.stripe.com` in production; a local fake in tests.
    pub base_url: String,
    /// The secret API key, `sk_live_…` or `sk_test_…` (or a restricted `rk_…`).
    pub secret_key: String,
    /// Limit for one whole request, connecting included.
    pub timeout: Duration,
}

impl StripeConfig {
    /// The real Stripe API with a 20-second timeout.
    pub fn new(secret_key: impl Into<String>) -> Self {
        StripeConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            secret_key: secret_key.into(),
            timeout: Duration::from_secs(20),
        }
    }
}

// By hand so the secret key never reaches a log.
impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig")
            .field("base_url", &self.base_url)
            .field("secret_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What to charge for: one item at one price, paid through a hosted page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// ISO 4217 code, any case (sent in lower case, as Stripe wants).
    pub currency: String,
    /// Price in the currency's smallest unit (kobo, cents); must be > 0.
    pub unit_amount: i64,
    /// What the payer sees on the page ("Charging session at CP-001").
    pub product_name: String,
    /// Where Stripe sends the payer after paying. Stripe replaces the literal
    /// text `{CHECKOUT_SESSION_ID}` in it with the session's id.
    pub success_url: String,
    /// Where the payer goes on "back".
    pub cancel_url: String,
    /// When the link stops working, unix seconds. Clamped into what Stripe
    /// accepts (see [`clamp_expires_at`]); the session's own `expires_at`
    /// is the truth afterwards.
    pub expires_at: i64,
    /// Our reference, e.g. the session id; comes back on the session and in
    /// webhooks.
    pub client_reference_id: Option<String>,
    /// Free key/value pairs, returned as-is on the session and in webhooks.
    /// Stripe allows 50 keys, keys up to 40 and values up to 500 characters.
    pub metadata: BTreeMap<String, String>,
}

/// Moves a requested expiry into the window Stripe accepts, measured from
/// `now` with [`EXPIRY_MARGIN_SECS`] to spare at both ends: no earlier than
/// 30 min + margin, no later than 24 h − margin.
///
/// Clamping rather than rejecting: the caller asks for "now + TTL", and by
/// the time the request reaches Stripe a TTL of exactly 24 h would be a few
/// milliseconds too long. A TTL configured outside 30 min..24 h should be
/// refused when the configuration is read; this keeps a request valid.
pub fn clamp_expires_at(requested: i64, now: i64) -> i64 {
    let earliest = now + MIN_EXPIRY_SECS + EXPIRY_MARGIN_SECS;
    let latest = now + MAX_EXPIRY_SECS - EXPIRY_MARGIN_SECS;
    requested.clamp(earliest, latest)
}

impl CheckoutRequest {
    /// The form fields `POST /v1/checkout/sessions` is sent, in order, with
    /// `expires_at` clamped relative to `now` (unix seconds).
    pub fn form_fields(&self, now: i64) -> Result<Vec<(String, String)>, StripeError> {
        let currency = self.currency.trim().to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(StripeError::InvalidRequest(format!(
                "currency {:?} is not a three-letter ISO 4217 code",
                self.currency
            )));
        }
        if self.unit_amount <= 0 {
            return Err(StripeError::InvalidRequest(format!(
                "amount must be positive, got {}",
                self.unit_amount
            )));
        }
        if self.product_name.trim().is_empty() {
            return Err(StripeError::InvalidRequest(
                "product name must not be empty".to_owned(),
            ));
        }
        let mut fields: Vec<(String, String)> = vec![
            ("mode".into(), "payment".into()),
            ("line_items[0][price_data][currency]".into(), currency),
            (
                "line_items[0][price_data][unit_amount]".into(),
                self.unit_amount.to_string(),
            ),
            (
                "line_items[0][price_data][product_data][name]".into(),
                self.product_name.clone(),
            ),
            ("line_items[0][quantity]".into(), "1".into()),
            ("success_url".into(), self.success_url.clone()),
            ("cancel_url".into(), self.cancel_url.clone()),
            (
                "expires_at".into(),
                clamp_expires_at(self.expires_at, now).to_string(),
            ),
        ];
        if let Some(reference) = &self.client_reference_id {
            fields.push(("client_reference_id".into(), reference.clone()));
        }
        for (key, value) in &self.metadata {
            fields.push((format!("metadata[{key}]"), value.clone()));
        }
        Ok(fields)
    }
}

/// The parts of Stripe's Checkout Session object this system uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutSession {
    /// `cs_test_…` / `cs_live_…`.
    pub id: String,
    /// The hosted payment page; `None` once the session is complete or expired.
    pub url: Option<String>,
    /// `open`, `complete` or `expired`.
    pub status: String,
    /// `unpaid`, `paid` or `no_payment_required`.
    pub payment_status: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Smallest currency unit; Stripe may omit it for some session kinds.
    pub amount_total: Option<i64>,
    /// Lower-case ISO code.
    pub currency: Option<String>,
    pub client_reference_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

impl CheckoutSession {
    pub fn is_open(&self) -> bool {
        self.status == "open"
    }

    pub fn is_paid(&self) -> bool {
        self.payment_status == "paid"
    }

    /// Reads a Checkout Session object from Stripe's JSON, e.g. the
    /// `data.object` of a `checkout.session.completed` event.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        // A plain struct with named fields: no untagged/flatten, which break
        // under serde_json's arbitrary_precision (see the house notes).
        #[derive(Deserialize)]
        struct Raw {
            id: String,
            url: Option<String>,
            status: Option<String>,
            payment_status: Option<String>,
            expires_at: i64,
            amount_total: Option<i64>,
            currency: Option<String>,
            client_reference_id: Option<String>,
            metadata: Option<BTreeMap<String, String>>,
        }
        let object = value.get("object").and_then(Value::as_str);
        if object != Some("checkout.session") {
            return Err(format!(
                "expected a checkout.session object, got {}",
                object.unwrap_or("no object type")
            ));
        }
        let raw = Raw::deserialize(value).map_err(|e| e.to_string())?;
        Ok(CheckoutSession {
            id: raw.id,
            url: raw.url,
            status: raw.status.unwrap_or_default(),
            payment_status: raw.payment_status.unwrap_or_default(),
            expires_at: raw.expires_at,
            amount_total: raw.amount_total,
            currency: raw.currency,
            client_reference_id: raw.client_reference_id,
            metadata: raw.metadata.unwrap_or_default(),
        })
    }
}

/// Why a Stripe call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error object: `kind` is its `type`
    /// (`invalid_request_error`, `idempotency_error`, `api_error`,
    /// `card_error`, `rate_limit_error`…), `code` its machine code if any.
    #[error("Stripe refused the request (HTTP {status}, {kind}): {message}")]
    Api {
        status: u16,
        kind: String,
        code: Option<String>,
        message: String,
    },
    #[error("Stripe could not be reached: {0}")]
    Network(String),
    #[error("Stripe did not answer within {} ms", .after.as_millis())]
    Timeout { after: Duration },
    /// An answer that is not what Stripe sends (not JSON, missing fields).
    #[error("Stripe's answer (HTTP {status}) could not be read: {detail}")]
    Decode { status: u16, detail: String },
    /// Refused before sending: Stripe would refuse it too.
    #[error("invalid payment request: {0}")]
    InvalidRequest(String),
}

impl StripeError {
    /// Whether sending the same request again, with the same idempotency
    /// key, may succeed: network trouble, timeouts, 409 (a concurrent request
    /// with the same key), 429 and 5xx, as Stripe's own libraries retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            StripeError::Network(_) | StripeError::Timeout { .. } => true,
            StripeError::Api { status, .. } => matches!(status, 409 | 429) || *status >= 500,
            _ => false,
        }
    }
}

/// A client for Stripe's Checkout Session endpoints.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base_url: String,
    secret_key: String,
    timeout: Duration,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl StripeClient {
    pub fn new(config: StripeConfig) -> Result<Self, StripeError> {
        let base_url = config.base_url.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base_url).map_err(|_| {
            StripeError::InvalidRequest(format!("Stripe base URL {base_url:?} is not a URL"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(StripeError::InvalidRequest(format!(
                "Stripe base URL {base_url:?} must be http:// or https://"
            )));
        }
        if config.secret_key.trim().is_empty() {
            return Err(StripeError::InvalidRequest(
                "the Stripe secret key is empty".to_owned(),
            ));
        }
        // reqwest is built without a default TLS crypto provider; installing
        // ring is a no-op if the application already installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| StripeError::Network(format!("could not build the HTTP client: {e}")))?;
        Ok(StripeClient {
            http,
            base_url,
            secret_key: config.secret_key,
            timeout: config.timeout,
        })
    }

    /// Creates a Checkout Session. Calling again with the same
    /// `idempotency_key` and the same request returns the same session
    /// instead of a new one (Stripe keeps keys for at least 24 hours), so
    /// use one key per payment link, e.g. derived from its id, and reuse it
    /// on retries. Note that `expires_at` is clamped against the current
    /// clock, so a retry minutes later with the same key may be seen by
    /// Stripe as different parameters if the request asked for an expiry at
    /// the edge of the window; keep requested expiries inside it.
    pub async fn create_checkout_session(
        &self,
        req: &CheckoutRequest,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, StripeError> {
        if idempotency_key.trim().is_empty() || idempotency_key.len() > 255 {
            return Err(StripeError::InvalidRequest(
                "the idempotency key must be 1 to 255 characters".to_owned(),
            ));
        }
        let fields = req.form_fields(chrono::Utc::now().timestamp())?;
        let request = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.base_url))
            .header("Idempotency-Key", idempotency_key)
            .form(&fields);
        self.send(request).await
    }

    /// Reads a Checkout Session's current state.
    pub async fn retrieve_checkout_session(
        &self,
        id: &str,
    ) -> Result<CheckoutSession, StripeError> {
        check_session_id(id)?;
        let request = self
            .http
            .get(format!("{}/v1/checkout/sessions/{id}", self.base_url));
        self.send(request).await
    }

    /// Expires an open Checkout Session so its link stops working. Stripe
    /// refuses this (an `invalid_request_error`) once a session is complete
    /// or already expired.
    pub async fn expire_checkout_session(&self, id: &str) -> Result<CheckoutSession, StripeError> {
        check_session_id(id)?;
        let request = self.http.post(format!(
            "{}/v1/checkout/sessions/{id}/expire",
            self.base_url
        ));
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<CheckoutSession, StripeError> {
        let response = request
            .bearer_auth(&self.secret_key)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        let json: Value = serde_json::from_slice(&body).map_err(|_| StripeError::Decode {
            status,
            detail: format!(
                "not JSON: {:?}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(80)
                    .collect::<String>()
            ),
        })?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &json));
        }
        CheckoutSession::from_json(&json).map_err(|detail| StripeError::Decode { status, detail })
    }

    fn transport_error(&self, e: reqwest::Error) -> StripeError {
        if e.is_timeout() {
            return StripeError::Timeout {
                after: self.timeout,
            };
        }
        let e = e.without_url();
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        StripeError::Network(detail)
    }
}

/// Session ids go into the URL path: only Stripe's id alphabet is let through.
fn check_session_id(id: &str) -> Result<(), StripeError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(StripeError::InvalidRequest(format!(
            "{id:?} is not a Checkout Session id"
        )));
    }
    Ok(())
}

/// Stripe's error envelope: `{"error": {"type", "code"?, "message", "param"?}}`.
fn api_error(status: u16, json: &Value) -> StripeError {
    let Some(error) = json.get("error") else {
        return StripeError::Decode {
            status,
            detail: "an error status without Stripe's error object".to_owned(),
        };
    };
    let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
    StripeError::Api {
        status,
        kind: text("type").unwrap_or_else(|| "unknown_error".to_owned()),
        code: text("code"),
        message: text("message").unwrap_or_else(|| "(no message)".to_owned()),
    }
}

/// A verified webhook event.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    /// `evt_…`; Stripe may deliver one event more than once, so handlers
    /// should be idempotent on this id.
    pub id: String,
    /// The event `type`: `checkout.session.completed`,
    /// `checkout.session.expired`, `checkout.session.async_payment_succeeded`…
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    /// `data.object.id`: for checkout events, the `cs_…` session id.
    pub object_id: Option<String>,
    /// `data.object` as sent (for checkout events, a Checkout Session;
    /// [`CheckoutSession::from_json`] reads it).
    pub object: Value,
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the Stripe-Signature header is malformed: {0}")]
    MalformedHeader(String),
    #[error("no v1 signature matches the payload")]
    BadSignature,
    #[error("the signature timestamp is {age_secs} s away from now, more than the {tolerance_secs} s allowed")]
    Stale { age_secs: i64, tolerance_secs: i64 },
    #[error("the payload is not a Stripe event: {0}")]
    InvalidPayload(String),
}

type HmacSha256 = Hmac<Sha256>;

fn signer(secret: &str, t: i64, body: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Stripe-Signature` header value Stripe would send for `body` signed
/// at time `t` with the endpoint secret: `t={t},v1={hex hmac}`.
pub fn sign_webhook(body: &[u8], secret: &str, t: i64) -> String {
    let signature = signer(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(signature))
}

/// Checks a webhook the way Stripe's libraries do, then parses the event.
///
/// `raw_body` must be the exact bytes received (re-serialised JSON would not
/// match the signature). The header may carry several `v1` signatures (while
/// a secret is being rolled) and other schemes (`v0`), which are ignored;
/// one matching `v1` is enough. Comparison is constant-time. The timestamp
/// must be within `tolerance_secs` of `now` either way: too old is a replay,
/// and Stripe never signs in the future beyond clock skew.
pub fn verify_webhook(
    raw_body: &[u8],
    signature_header: &str,
    secret: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<WebhookEvent, WebhookError> {
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in signature_header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" if timestamp.is_none() => {
                timestamp = Some(value.parse().map_err(|_| {
                    WebhookError::MalformedHeader(format!("timestamp {value:?} is not a number"))
                })?);
            }
            // Not hex, or not 32 bytes: it cannot match, so it is dropped.
            "v1" => signatures.extend(hex::decode(value).ok().filter(|s| s.len() == 32)),
            _ => {}
        }
    }
    let t =
        timestamp.ok_or_else(|| WebhookError::MalformedHeader("no timestamp (t=…)".to_owned()))?;
    if signatures.is_empty() {
        return Err(WebhookError::MalformedHeader("no v1 signature".to_owned()));
    }
    let mac = signer(secret, t, raw_body);
    if !signatures
        .iter()
        .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
    {
        return Err(WebhookError::BadSignature);
    }
    // Checked after the signature so that a forged request learns nothing
    // about our clock, and a genuine but late one is reported as such.
    let age = now - t;
    if age.abs() > tolerance_secs {
        return Err(WebhookError::Stale {
            age_secs: age,
            tolerance_secs,
        });
    }
    parse_event(raw_body)
}

fn parse_event(raw_body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    let invalid = |what: &str| WebhookError::InvalidPayload(what.to_owned());
    let json: Value = serde_json::from_slice(raw_body)
        .map_err(|e| WebhookError::InvalidPayload(e.to_string()))?;
    if json.get("object").and_then(Value::as_str) != Some("event") {
        return Err(invalid("its object is not \"event\""));
    }
    let text = |key: &str| json.get(key).and_then(Value::as_str).map(str::to_owned);
    let id = text("id").ok_or_else(|| invalid("no id"))?;
    let kind = text("type").ok_or_else(|| invalid("no type"))?;
    let created = json
        .get("created")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("no created timestamp"))?;
    let object = json
        .get("data")
        .and_then(|d| d.get("object"))
        .filter(|o| o.is_object())
        .cloned()
        .ok_or_else(|| invalid("no data.object"))?;
    let object_id = object.get("id").and_then(Value::as_str).map(str::to_owned);
    Ok(WebhookEvent {
        id,
        kind,
        created,
        object_id,
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CheckoutRequest {
        CheckoutRequest {
            currency: "NGN".into(),
            unit_amount: 250_000,
            product_name: "Charging session".into(),
            success_url: "https://app.example/paid?session={CHECKOUT_SESSION_ID}".into(),
            cancel_url: "https://app.example/cancel".into(),
            expires_at: 1_700_000_000 + 3600,
            client_reference_id: Some("sess-1".into()),
            metadata: BTreeMap::from([("sessionId".into(), "sess-1".into())]),
        }
    }

    #[test]
    fn form_fields_follow_stripe_s_parameter_names() {
        let fields = request().form_fields(1_700_000_000).unwrap();
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("mode"), Some("payment"));
        assert_eq!(get("line_items[0][price_data][currency]"), Some("ngn"));
        assert_eq!(
            get("line_items[0][price_data][unit_amount]"),
            Some("250000")
        );
        assert_eq!(get("line_items[0][quantity]"), Some("1"));
        assert_eq!(get("expires_at"), Some("1700003600"));
        assert_eq!(get("client_reference_id"), Some("sess-1"));
        assert_eq!(get("metadata[sessionId]"), Some("sess-1"));
    }

    #[test]
    fn requests_stripe_would_refuse_are_refused_here() {
        let bad = [
            CheckoutRequest {
                currency: "naira".into(),
                ..request()
            },
            CheckoutRequest {
                unit_amount: 0,
                ..request()
            },
            CheckoutRequest {
                unit_amount: -5,
                ..request()
            },
            CheckoutRequest {
                product_name: " ".into(),
                ..request()
            },
        ];
        for req in bad {
            assert!(
                matches!(req.form_fields(0), Err(StripeError::InvalidRequest(_))),
                "{req:?}"
            );
        }
    }

    #[test]
    fn expiry_is_kept_inside_stripe_s_window() {
        let now = 1_700_000_000;
        assert_eq!(clamp_expires_at(now + 3600, now), now + 3600);
        assert_eq!(clamp_expires_at(now + 60, now), now + 31 * 60);
        assert_eq!(clamp_expires_at(now - 10, now), now + 31 * 60);
        assert_eq!(clamp_expires_at(now + 24 * 3600, now), now + 24 * 3600 - 60);
        assert_eq!(clamp_expires_at(now + 48 * 3600, now), now + 24 * 3600 - 60);
    }

    #[test]
    fn a_signature_made_by_sign_webhook_verifies() {
        let body = br#"{"id":"evt_1","object":"event","type":"checkout.session.completed","created":1700000000,"data":{"object":{"id":"cs_test_1","object":"checkout.session"}}}"#;
        let header = sign_webhook(body, "whsec_test", 1_700_000_000);
        let event = verify_webhook(body, &header, "whsec_test", 1_700_000_010, 300).unwrap();
        assert_eq!(event.kind, "checkout.session.completed");
        assert_eq!(event.object_id.as_deref(), Some("cs_test_1"));
        assert_eq!(
            verify_webhook(body, &header, "whsec_other", 1_700_000_010, 300),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn stripe_s_documented_scheme_is_what_is_computed() {
        // HMAC-SHA256(key = "whsec_abc", "12345.{}"), computed independently
        // with `printf '12345.{}' | openssl dgst -sha256 -hmac whsec_abc`.
        assert_eq!(
            sign_webhook(b"{}", "whsec_abc", 12345),
            "t=12345,v1=f3ff04348fb0f56ab2cba514a735949568291d239c55b2179c9b947fe225ad3b"
        );
    }
}
