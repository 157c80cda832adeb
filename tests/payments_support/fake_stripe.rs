//! A fake of Stripe's API for tests: the Checkout Session endpoints and
//! signed webhook events, served over real HTTP on `127.0.0.1:0`.
//!
//! Stripe's servers cannot be reached from tests, so this stands in for them
//! at the HTTP level, with the request and response shapes of the real API:
//!
//! - `POST /v1/checkout/sessions` (form-encoded, `mode=payment` with one
//!   inline-priced line item), `GET /v1/checkout/sessions/{id}`,
//!   `POST /v1/checkout/sessions/{id}/expire`;
//! - `Authorization: Bearer <secret key>` checked (401 like Stripe);
//! - required parameters checked, unknown ones refused, `expires_at` held to
//!   30 min..24 h from creation, all with Stripe's error envelope
//!   `{"error": {"type", "code"?, "message", "param"?}}`;
//! - `Idempotency-Key` honoured as Stripe does: the first result (success or
//!   500) is saved and replayed with `Idempotent-Replayed: true`; the same
//!   key with other parameters or another endpoint is a 400
//!   `idempotency_error`; while the first request is still running, 409;
//! - failure modes: every request answered 500, or answered late.
//!
//! Every request is recorded (method, path, headers, decoded form fields)
//! for assertions. It is self-contained so other test files can use it:
//! `#[path = "payments_support/fake_stripe.rs"] mod fake_stripe;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// How the fake misbehaves, if at all.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Failure {
    #[default]
    None,
    /// Every authenticated request gets Stripe's 500 `api_error`. As on
    /// Stripe, a 500 is saved under its idempotency key and replayed.
    ServerError,
    /// Requests are handled normally, but only after this delay: a client
    /// with a shorter timeout gives up while the session is still created.
    Delay(Duration),
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    /// The form body, decoded, in the order sent.
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    /// A form field's value: `field("line_items[0][quantity]")`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

enum Idempotency {
    /// The first request with this key is still being handled.
    InFlight,
    Done(Saved),
}

struct Saved {
    method: String,
    path: String,
    params: Vec<(String, String)>,
    status: StatusCode,
    body: Value,
}

#[derive(Default)]
struct Inner {
    secret_key: String,
    requests: Vec<RecordedRequest>,
    /// Session objects by id, in creation order via `order`.
    sessions: HashMap<String, Value>,
    order: Vec<String>,
    idempotency: HashMap<String, Idempotency>,
    failure: Failure,
}

/// A running fake Stripe. Cheap to clone; all clones share state. The
/// server runs on the current tokio runtime and stops with it.
#[derive(Clone)]
pub struct FakeStripe {
    base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeStripe {
    /// Starts the fake on a free port, accepting `secret_key` as the API key.
    pub async fn start(secret_key: &str) -> FakeStripe {
        let inner = Arc::new(Mutex::new(Inner {
            secret_key: secret_key.to_owned(),
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Stripe");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeStripe { base_url, inner };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// `http://127.0.0.1:PORT`, to use as the client's base URL.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    pub fn set_failure(&self, failure: Failure) {
        self.lock().failure = failure;
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Whether the request made with idempotency key `key` has finished (its
    /// answer is saved for replays).
    pub fn finished(&self, key: &str) -> bool {
        matches!(self.lock().idempotency.get(key), Some(Idempotency::Done(_)))
    }

    /// How many Checkout Sessions exist.
    pub fn session_count(&self) -> usize {
        self.lock().order.len()
    }

    /// Every Checkout Session object, oldest first.
    pub fn sessions(&self) -> Vec<Value> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .map(|id| inner.sessions[id].clone())
            .collect()
    }

    pub fn session(&self, id: &str) -> Option<Value> {
        self.lock().sessions.get(id).cloned()
    }

    /// What happens on Stripe when the payer pays: the session becomes
    /// `complete`/`paid` and its URL stops working. Returns the object.
    pub fn complete_session(&self, id: &str) -> Value {
        self.update_session(id, |s| {
            s["status"] = json!("complete");
            s["payment_status"] = json!("paid");
            s["url"] = Value::Null;
            s["payment_intent"] = json!(format!("pi_test_{}", random_id(24)));
        })
    }

    /// What happens on Stripe when `expires_at` passes unpaid.
    pub fn expire_session(&self, id: &str) -> Value {
        self.update_session(id, |s| {
            s["status"] = json!("expired");
            s["url"] = Value::Null;
        })
    }

    fn update_session(&self, id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut inner = self.lock();
        let session = inner
            .sessions
            .get_mut(id)
            .unwrap_or_else(|| panic!("fake Stripe has no session {id}"));
        change(session);
        session.clone()
    }

    /// A Stripe Event (`checkout.session.completed`,
    /// `checkout.session.expired`, …) about a session, as the JSON body
    /// Stripe would POST to a webhook endpoint.
    pub fn event_json(&self, kind: &str, session_id: &str) -> String {
        let session = self
            .session(session_id)
            .unwrap_or_else(|| panic!("fake Stripe has no session {session_id}"));
        json!({
            "id": format!("evt_{}", random_id(24)),
            "object": "event",
            "api_version": "2024-06-20",
            "created": now(),
            "data": {"object": session},
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": kind,
        })
        .to_string()
    }

    /// `event_json` plus the `Stripe-Signature` header Stripe would send
    /// with it, signed now with the endpoint's `webhook_secret`.
    pub fn signed_event(
        &self,
        kind: &str,
        session_id: &str,
        webhook_secret: &str,
    ) -> (String, String) {
        let body = self.event_json(kind, session_id);
        let header = stripe_signature(body.as_bytes(), webhook_secret, now());
        (body, header)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock has already failed;
        // the data is still fine to read for the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stripe's signing scheme, written out independently of the code under
/// test: `t={t},v1={hex HMAC-SHA256(secret, "{t}.{body}")}`.
pub fn stripe_signature(body: &[u8], secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn random_id(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}

/// Decodes `application/x-www-form-urlencoded`: `+` is a space, then
/// percent-escapes (brackets arrive as `%5B`/`%5D`).
fn decode_form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> (StatusCode, Value) {
    let mut error = Map::new();
    if let Some(code) = code {
        error.insert("code".into(), json!(code));
        error.insert(
            "doc_url".into(),
            json!(format!(
                "https://stripe.com/docs/error-codes/{}",
                code.replace('_', "-")
            )),
        );
    }
    error.insert("message".into(), json!(message));
    if let Some(param) = param {
        error.insert("param".into(), json!(param));
    }
    error.insert(
        "request_log_url".into(),
        json!("https://dashboard.stripe.com/test/logs/req_fake"),
    );
    error.insert("type".into(), json!(kind));
    (status, json!({ "error": error }))
}

fn missing(param: &str) -> (StatusCode, Value) {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_missing"),
        Some(param),
        &format!("Missing required param: {param}."),
    )
}

fn respond(status: StatusCode, body: &Value, replayed: bool) -> Response {
    let request_id = format!("req_{}", random_id(14));
    let mut response = (
        status,
        [
            ("content-type", "application/json"),
            ("request-id", request_id.as_str()),
        ],
        body.to_string(),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", "true".parse().unwrap());
    }
    response
}

async fn handle(
    State(fake): State<FakeStripe>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let header_map: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let idempotency_key = header_map.get("idempotency-key").cloned();
    let form = decode_form(&body);
    let failure = {
        let mut inner = fake.lock();
        inner.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            headers: header_map.clone(),
            idempotency_key: idempotency_key.clone(),
            form: form.clone(),
        });
        inner.failure.clone()
    };

    // Authentication comes first on Stripe: nothing else is looked at
    // without a valid key.
    let secret = fake.lock().secret_key.clone();
    match header_map
        .get("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        None => {
            let (status, body) = stripe_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                None,
                "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            );
            return respond(status, &body, false);
        }
        Some(key) if key != secret => {
            let tail: String = key
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let prefix: String = key.chars().take(8).collect();
            let (status, body) = stripe_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                None,
                &format!("Invalid API Key provided: {prefix}****{tail}"),
            );
            return respond(status, &body, false);
        }
        Some(_) => {}
    }

    // Idempotency: only POSTs are idempotent requests on Stripe.
    let key = idempotency_key.filter(|_| method == Method::POST);
    let mut params = form.clone();
    params.sort();
    if let Some(key) = &key {
        let mut inner = fake.lock();
        match inner.idempotency.get(key) {
            Some(Idempotency::InFlight) => {
                let (status, body) = stripe_error(
                    StatusCode::CONFLICT,
                    "invalid_request_error",
                    Some("idempotency_key_in_use"),
                    None,
                    &format!("There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): {key}. Please try again later."),
                );
                return respond(status, &body, false);
            }
            Some(Idempotency::Done(saved)) => {
                let (status, body) = if saved.path != path || saved.method != method.as_str() {
                    stripe_error(
                        StatusCode::BAD_REQUEST,
                        "idempotency_error",
                        None,
                        None,
                        &format!("Keys for idempotent requests can only be used for the same endpoint they were first used for ('{path}' vs '{}'). Try using a key other than '{key}' if you meant to execute a different request.", saved.path),
                    )
                } else if saved.params != params {
                    stripe_error(
                        StatusCode::BAD_REQUEST,
                        "idempotency_error",
                        None,
                        None,
                        &format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
                    )
                } else {
                    return respond(saved.status, &saved.body, true);
                };
                return respond(status, &body, false);
            }
            None => {
                inner.idempotency.insert(key.clone(), Idempotency::InFlight);
            }
        }
    }

    // Stripe finishes a request even if the client hangs up (that is what
    // makes retrying with the same key safe), while hyper drops a handler
    // whose connection closed. So the work runs in a task of its own.
    let work = tokio::spawn(process(fake, failure, method, path, form, key, params));
    match work.await {
        Ok(response) => response,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn process(
    fake: FakeStripe,
    failure: Failure,
    method: Method,
    path: String,
    form: Vec<(String, String)>,
    key: Option<String>,
    params: Vec<(String, String)>,
) -> Response {
    if let Failure::Delay(delay) = failure {
        tokio::time::sleep(delay).await;
    }
    let (status, body) = if failure == Failure::ServerError {
        stripe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            None,
            "An unknown error occurred. Please try again later or contact support.",
        )
    } else {
        route(&fake, &method, &path, &form)
    };

    if let Some(key) = key {
        let mut inner = fake.lock();
        // As on Stripe: a request that failed validation saves nothing, so
        // the key can be used again; anything that ran is saved.
        if status.is_client_error() {
            inner.idempotency.remove(&key);
        } else {
            inner.idempotency.insert(
                key,
                Idempotency::Done(Saved {
                    method: method.to_string(),
                    path,
                    params,
                    status,
                    body: body.clone(),
                }),
            );
        }
    }
    respond(status, &body, false)
}

fn route(
    fake: &FakeStripe,
    method: &Method,
    path: &str,
    form: &[(String, String)],
) -> (StatusCode, Value) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "checkout", "sessions"]) => create_session(fake, form),
        ("GET", ["v1", "checkout", "sessions", id]) => match fake.session(id) {
            Some(session) => (StatusCode::OK, session),
            None => no_such_session(id),
        },
        ("POST", ["v1", "checkout", "sessions", id, "expire"]) => {
            let Some(session) = fake.session(id) else {
                return no_such_session(id);
            };
            if session["status"] != "open" {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    None,
                    None,
                    "Only Checkout Sessions with a status of `open` can be expired.",
                );
            }
            (StatusCode::OK, fake.expire_session(id))
        }
        _ => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            None,
            &format!("Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."),
        ),
    }
}

fn no_such_session(id: &str) -> (StatusCode, Value) {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("resource_missing"),
        Some("session"),
        &format!("No such checkout.session: '{id}'"),
    )
}

/// Parameters of `POST /v1/checkout/sessions` the fake understands.
const KNOWN_PARAMS: &[&str] = &[
    "mode",
    "success_url",
    "cancel_url",
    "expires_at",
    "client_reference_id",
    "customer_email",
    "locale",
    "line_items[0][quantity]",
    "line_items[0][price_data][currency]",
    "line_items[0][price_data][unit_amount]",
    "line_items[0][price_data][product_data][name]",
    "line_items[0][price_data][product_data][description]",
];

fn create_session(fake: &FakeStripe, form: &[(String, String)]) -> (StatusCode, Value) {
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let invalid = |param: &str, message: String| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            Some(param),
            &message,
        )
    };
    for (name, _) in form {
        let known = KNOWN_PARAMS.contains(&name.as_str())
            || (name.starts_with("metadata[") && name.ends_with(']'))
            || name.starts_with("payment_method_types[");
        if !known {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_unknown"),
                Some(name),
                &format!("Received unknown parameter: {name}"),
            );
        }
    }
    let Some(mode) = get("mode") else {
        return missing("mode");
    };
    if mode != "payment" {
        return invalid(
            "mode",
            format!("Invalid mode: {mode}; this fake supports only payment."),
        );
    }
    let Some(currency) = get("line_items[0][price_data][currency]") else {
        return missing("line_items[0][price_data][currency]");
    };
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return invalid(
            "line_items[0][price_data][currency]",
            format!("Invalid currency: {currency}. Stripe currently supports these currencies: usd, eur, gbp, ngn, jpy, …"),
        );
    }
    let Some(unit_amount) = get("line_items[0][price_data][unit_amount]") else {
        return missing("line_items[0][price_data][unit_amount]");
    };
    let Ok(unit_amount) = unit_amount.parse::<i64>() else {
        return invalid(
            "line_items[0][price_data][unit_amount]",
            format!("Invalid integer: {unit_amount}"),
        );
    };
    if unit_amount < 0 {
        return invalid(
            "line_items[0][price_data][unit_amount]",
            "This value must be greater than or equal to 0.".to_owned(),
        );
    }
    if get("line_items[0][price_data][product_data][name]").is_none_or(str::is_empty) {
        return missing("line_items[0][price_data][product_data][name]");
    }
    let Some(quantity) = get("line_items[0][quantity]") else {
        return missing("line_items[0][quantity]");
    };
    let Ok(quantity) = quantity.parse::<i64>() else {
        return invalid(
            "line_items[0][quantity]",
            format!("Invalid integer: {quantity}"),
        );
    };
    if quantity < 1 {
        return invalid(
            "line_items[0][quantity]",
            "This value must be greater than or equal to 1.".to_owned(),
        );
    }
    let Some(success_url) = get("success_url") else {
        return missing("success_url");
    };
    let created = now();
    let expires_at = match get("expires_at") {
        None => created + 24 * 3600,
        Some(raw) => {
            let Ok(t) = raw.parse::<i64>() else {
                return invalid("expires_at", format!("Invalid integer: {raw}"));
            };
            if t - created < 30 * 60 {
                return invalid(
                    "expires_at",
                    "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.".to_owned(),
                );
            }
            if t - created > 24 * 3600 {
                return invalid(
                    "expires_at",
                    "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.".to_owned(),
                );
            }
            t
        }
    };
    let metadata: Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((key.to_owned(), json!(v)))
        })
        .collect();

    let id = format!("cs_test_a1{}", random_id(56));
    let amount = unit_amount * quantity;
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "cancel_url": get("cancel_url"),
        "client_reference_id": get("client_reference_id"),
        "created": created,
        "currency": currency,
        "customer": null,
        "customer_email": get("customer_email"),
        "expires_at": expires_at,
        "livemode": false,
        "locale": get("locale"),
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": null,
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "status": "open",
        "success_url": success_url,
        "url": format!("https://checkout.stripe.com/c/pay/{id}#fidkdWxOYHwnPyd1blpxYHZxWjA0"),
    });
    let mut inner = fake.lock();
    inner.sessions.insert(id.clone(), session.clone());
    inner.order.push(id);
    (StatusCode::OK, session)
}
