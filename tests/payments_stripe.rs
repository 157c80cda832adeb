//! The Stripe Checkout client against a fake Stripe that speaks the real
//! API's HTTP shapes, and webhook signature verification.

#[path = "payments_support/fake_stripe.rs"]
mod fake_stripe;
#[path = "common/wait.rs"]
mod wait;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use csms::payments::stripe::{
    sign_webhook, verify_webhook, CheckoutRequest, CheckoutSession, StripeClient, StripeConfig,
    StripeError, WebhookError, DEFAULT_WEBHOOK_TOLERANCE_SECS,
};
use fake_stripe::{now, stripe_signature, Failure, FakeStripe};

const SECRET_KEY: &str = "sk_test_51FakeKeyForTests";
const WEBHOOK_SECRET: &str = "whsec_test_secret";

fn client(fake: &FakeStripe) -> StripeClient {
    client_with(fake, SECRET_KEY, Duration::from_secs(5))
}

fn client_with(fake: &FakeStripe, key: &str, timeout: Duration) -> StripeClient {
    StripeClient::new(StripeConfig {
        base_url: fake.base_url(),
        secret_key: key.to_owned(),
        timeout,
    })
    .unwrap()
}

fn request() -> CheckoutRequest {
    CheckoutRequest {
        currency: "NGN".into(),
        unit_amount: 350_075,
        product_name: "Charging session at CP-001".into(),
        success_url: "https://app.example/paid?cs={CHECKOUT_SESSION_ID}".into(),
        cancel_url: "https://app.example/sessions/42".into(),
        expires_at: now() + 2 * 3600,
        client_reference_id: Some("session-42".into()),
        metadata: BTreeMap::from([
            ("sessionId".to_owned(), "42".to_owned()),
            ("paymentLinkId".to_owned(), "pl-7".to_owned()),
        ]),
    }
}

async fn start() -> FakeStripe {
    let _ = rustls::crypto::ring::default_provider().install_default();
    FakeStripe::start(SECRET_KEY).await
}

#[tokio::test]
async fn create_sends_stripe_s_form_fields_and_headers() {
    let fake = start().await;
    let req = request();
    let session = client(&fake)
        .create_checkout_session(&req, "link-pl-7")
        .await
        .unwrap();

    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/checkout/sessions")
    );
    assert_eq!(
        r.header("authorization"),
        Some(&*format!("Bearer {SECRET_KEY}"))
    );
    assert_eq!(r.header("idempotency-key"), Some("link-pl-7"));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let expected: Vec<(&str, String)> = vec![
        ("mode", "payment".into()),
        ("line_items[0][price_data][currency]", "ngn".into()),
        ("line_items[0][price_data][unit_amount]", "350075".into()),
        (
            "line_items[0][price_data][product_data][name]",
            "Charging session at CP-001".into(),
        ),
        ("line_items[0][quantity]", "1".into()),
        ("success_url", req.success_url.clone()),
        ("cancel_url", req.cancel_url.clone()),
        ("expires_at", req.expires_at.to_string()),
        ("client_reference_id", "session-42".into()),
        ("metadata[paymentLinkId]", "pl-7".into()),
        ("metadata[sessionId]", "42".into()),
    ];
    let form: Vec<(&str, String)> = r
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(form, expected);

    assert!(session.id.starts_with("cs_test_"), "{}", session.id);
    assert_eq!(
        session.url.as_deref(),
        Some(&*format!(
            "https://checkout.stripe.com/c/pay/{}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
            session.id
        ))
    );
    assert_eq!(
        (session.status.as_str(), session.payment_status.as_str()),
        ("open", "unpaid")
    );
    assert!(session.is_open() && !session.is_paid());
    assert_eq!(session.expires_at, req.expires_at);
    assert_eq!(session.amount_total, Some(350_075));
    assert_eq!(session.currency.as_deref(), Some("ngn"));
    assert_eq!(session.client_reference_id.as_deref(), Some("session-42"));
    assert_eq!(session.metadata, req.metadata);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_does_not_create_a_second_session() {
    let fake = start().await;
    let stripe = client(&fake);
    let req = request();
    let first = stripe
        .create_checkout_session(&req, "link-pl-7")
        .await
        .unwrap();
    let again = stripe
        .create_checkout_session(&req, "link-pl-7")
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(fake.session_count(), 1);
    assert_eq!(fake.requests().len(), 2);

    // Another key is another session.
    let other = stripe
        .create_checkout_session(&req, "link-pl-8")
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(fake.session_count(), 2);
}

#[tokio::test]
async fn reusing_a_key_with_other_parameters_is_stripe_s_idempotency_error() {
    let fake = start().await;
    let stripe = client(&fake);
    stripe
        .create_checkout_session(&request(), "link-pl-7")
        .await
        .unwrap();
    let changed = CheckoutRequest {
        unit_amount: 1,
        ..request()
    };
    let err = stripe
        .create_checkout_session(&changed, "link-pl-7")
        .await
        .unwrap_err();
    match &err {
        StripeError::Api {
            status: 400,
            kind,
            message,
            ..
        } => {
            assert_eq!(kind, "idempotency_error");
            assert!(message.contains("same parameters"), "{message}");
        }
        other => panic!("expected an idempotency error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(fake.session_count(), 1);
}

#[tokio::test]
async fn a_wrong_secret_key_is_stripe_s_401() {
    let fake = start().await;
    let err = client_with(&fake, "sk_test_wrong_key_9999", Duration::from_secs(5))
        .create_checkout_session(&request(), "k1")
        .await
        .unwrap_err();
    match &err {
        StripeError::Api {
            status: 401,
            kind,
            message,
            ..
        } => {
            assert_eq!(kind, "invalid_request_error");
            assert!(
                message.starts_with("Invalid API Key provided: sk_test_****9999"),
                "{message}"
            );
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(fake.session_count(), 0);
}

#[tokio::test]
async fn a_stripe_server_error_is_a_typed_retryable_error() {
    let fake = start().await;
    fake.set_failure(Failure::ServerError);
    let stripe = client(&fake);
    let req = request();
    let err = stripe
        .create_checkout_session(&req, "k-500")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StripeError::Api { status: 500, kind, .. } if kind == "api_error"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("Stripe refused the request (HTTP 500, api_error): "),
        "{err}"
    );

    // Stripe saves a 500 under its idempotency key and replays it: once
    // Stripe recovers, a retry needs a fresh key.
    fake.set_failure(Failure::None);
    let replay = stripe
        .create_checkout_session(&req, "k-500")
        .await
        .unwrap_err();
    assert_eq!(replay, err);
    stripe
        .create_checkout_session(&request(), "k-500-retry")
        .await
        .unwrap();
    assert_eq!(fake.session_count(), 1);
}

#[tokio::test]
async fn a_slow_stripe_times_out_and_the_retry_finds_the_session_it_made() {
    let fake = start().await;
    fake.set_failure(Failure::Delay(Duration::from_millis(1500)));
    let stripe = client_with(&fake, SECRET_KEY, Duration::from_millis(300));
    // The request is built once and reused, as a caller must: a retry with
    // the same key and a recomputed `expires_at` would be different
    // parameters to Stripe.
    let req = request();
    let started = Instant::now();
    let err = stripe
        .create_checkout_session(&req, "k-slow")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StripeError::Timeout {
            after: Duration::from_millis(300)
        }
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_retryable());

    // While the first request is still being handled, Stripe answers 409.
    fake.set_failure(Failure::None);
    let busy = client(&fake)
        .create_checkout_session(&req, "k-slow")
        .await
        .unwrap_err();
    assert!(
        matches!(busy, StripeError::Api { status: 409, .. }),
        "{busy:?}"
    );
    assert!(busy.is_retryable());

    // Once it has finished, the retry gets the session it created: no second one.
    let slow = &fake;
    wait::until(
        "the slow request to finish",
        Duration::from_secs(10),
        || async move { slow.finished("k-slow") },
    )
    .await;
    let session = client(&fake)
        .create_checkout_session(&req, "k-slow")
        .await
        .unwrap();
    assert_eq!(fake.session_count(), 1);
    assert_eq!(fake.sessions()[0]["id"], session.id.as_str());
}

#[tokio::test]
async fn an_unreachable_stripe_is_a_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stripe = StripeClient::new(StripeConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        secret_key: SECRET_KEY.into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let err = stripe
        .create_checkout_session(&request(), "k")
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::Network(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_invalid_request_is_refused_before_anything_is_sent() {
    let fake = start().await;
    let stripe = client(&fake);
    for req in [
        CheckoutRequest {
            unit_amount: 0,
            ..request()
        },
        CheckoutRequest {
            currency: "N G".into(),
            ..request()
        },
    ] {
        let err = stripe.create_checkout_session(&req, "k").await.unwrap_err();
        assert!(matches!(err, StripeError::InvalidRequest(_)), "{err:?}");
    }
    let err = stripe
        .create_checkout_session(&request(), "")
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::InvalidRequest(_)), "{err:?}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn expiry_outside_stripe_s_window_is_clamped_into_it() {
    let fake = start().await;
    let stripe = client(&fake);
    let t0 = now();
    let too_soon = stripe
        .create_checkout_session(
            &CheckoutRequest {
                expires_at: t0 + 60,
                ..request()
            },
            "k-soon",
        )
        .await
        .unwrap();
    assert!(
        (t0 + 31 * 60..=t0 + 31 * 60 + 5).contains(&too_soon.expires_at),
        "{}",
        too_soon.expires_at
    );
    let too_late = stripe
        .create_checkout_session(
            &CheckoutRequest {
                expires_at: t0 + 48 * 3600,
                ..request()
            },
            "k-late",
        )
        .await
        .unwrap();
    let latest = t0 + 24 * 3600 - 60;
    assert!(
        (latest..=latest + 5).contains(&too_late.expires_at),
        "{}",
        too_late.expires_at
    );
}

#[tokio::test]
async fn expire_closes_an_open_session() {
    let fake = start().await;
    let stripe = client(&fake);
    let session = stripe
        .create_checkout_session(&request(), "k")
        .await
        .unwrap();

    let expired = stripe.expire_checkout_session(&session.id).await.unwrap();
    assert_eq!(expired.id, session.id);
    assert_eq!(expired.status, "expired");
    assert_eq!(expired.url, None);
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        (
            "POST",
            &*format!("/v1/checkout/sessions/{}/expire", session.id)
        )
    );
    assert_eq!(fake.session(&session.id).unwrap()["status"], "expired");
    assert_eq!(
        stripe.retrieve_checkout_session(&session.id).await.unwrap(),
        expired
    );

    // Stripe refuses to expire a session that is no longer open.
    let err = stripe
        .expire_checkout_session(&session.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StripeError::Api { status: 400, kind, .. } if kind == "invalid_request_error"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_paid_session_reads_as_complete_and_paid() {
    let fake = start().await;
    let stripe = client(&fake);
    let session = stripe
        .create_checkout_session(&request(), "k")
        .await
        .unwrap();
    fake.complete_session(&session.id);
    let now_paid = stripe.retrieve_checkout_session(&session.id).await.unwrap();
    assert!(now_paid.is_paid() && !now_paid.is_open());
    assert_eq!(now_paid.url, None);
    let err = stripe
        .expire_checkout_session(&session.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StripeError::Api { status: 400, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_session_is_stripe_s_resource_missing() {
    let fake = start().await;
    let err = client(&fake)
        .retrieve_checkout_session("cs_test_nope")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StripeError::Api {
            status: 404,
            kind: "invalid_request_error".into(),
            code: Some("resource_missing".into()),
            message: "No such checkout.session: 'cs_test_nope'".into(),
        }
    );
    // Ids go into the path; anything else is refused locally.
    let err = client(&fake)
        .expire_checkout_session("../../v1/charges")
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::InvalidRequest(_)), "{err:?}");
}

/// The fake itself holds requests to Stripe's rules, so a client that
/// stopped following them would fail against it.
#[tokio::test]
async fn the_fake_refuses_what_stripe_refuses() {
    let fake = start().await;
    let http = reqwest::Client::new();
    let post = |form: Vec<(&'static str, String)>| {
        http.post(format!("{}/v1/checkout/sessions", fake.base_url()))
            .bearer_auth(SECRET_KEY)
            .form(&form)
            .send()
    };
    let base = || -> Vec<(&'static str, String)> {
        vec![
            ("mode", "payment".into()),
            ("line_items[0][price_data][currency]", "usd".into()),
            ("line_items[0][price_data][unit_amount]", "500".into()),
            ("line_items[0][price_data][product_data][name]", "x".into()),
            ("line_items[0][quantity]", "1".into()),
            ("success_url", "https://app.example/ok".into()),
        ]
    };
    let error_of = |v: serde_json::Value| v["error"].clone();

    let r = post(base()).await.unwrap();
    assert_eq!(r.status(), 200);
    let session: serde_json::Value = r.json().await.unwrap();
    assert_eq!(session["object"], "checkout.session");
    let parsed = CheckoutSession::from_json(&session).unwrap();
    assert!(
        parsed.expires_at - now() > 23 * 3600,
        "Stripe's default is 24 h"
    );

    let mut soon = base();
    soon.push(("expires_at", (now() + 29 * 60).to_string()));
    let r = post(soon).await.unwrap();
    assert_eq!(r.status(), 400);
    let e = error_of(r.json().await.unwrap());
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "expires_at");
    assert_eq!(
        e["message"],
        "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation."
    );

    let mut late = base();
    late.push(("expires_at", (now() + 25 * 3600).to_string()));
    let e = error_of(post(late).await.unwrap().json().await.unwrap());
    assert_eq!(
        e["message"],
        "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation."
    );

    let mut missing = base();
    missing.retain(|(k, _)| *k != "line_items[0][price_data][currency]");
    let e = error_of(post(missing).await.unwrap().json().await.unwrap());
    assert_eq!(e["code"], "parameter_missing");
    assert_eq!(e["param"], "line_items[0][price_data][currency]");

    let mut unknown = base();
    unknown.push(("line_items[0][price_data][amount]", "5".into()));
    let e = error_of(post(unknown).await.unwrap().json().await.unwrap());
    assert_eq!(
        e["message"],
        "Received unknown parameter: line_items[0][price_data][amount]"
    );

    let r = http
        .post(format!("{}/v1/checkout/sessions", fake.base_url()))
        .form(&base())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(fake.session_count(), 1);
}

// --- Webhooks -------------------------------------------------------------

fn completed_event(fake: &FakeStripe, session_id: &str) -> String {
    fake.complete_session(session_id);
    fake.event_json("checkout.session.completed", session_id)
}

async fn paid_session(fake: &FakeStripe) -> String {
    client(fake)
        .create_checkout_session(&request(), "k")
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_webhook_with_a_good_signature_is_parsed_into_an_event() {
    let fake = start().await;
    let id = paid_session(&fake).await;
    let (body, header) = {
        fake.complete_session(&id);
        fake.signed_event("checkout.session.completed", &id, WEBHOOK_SECRET)
    };
    let event = verify_webhook(
        body.as_bytes(),
        &header,
        WEBHOOK_SECRET,
        now(),
        DEFAULT_WEBHOOK_TOLERANCE_SECS,
    )
    .unwrap();
    assert!(event.id.starts_with("evt_"));
    assert_eq!(event.kind, "checkout.session.completed");
    assert_eq!(event.object_id.as_deref(), Some(&*id));
    assert!((now() - event.created).abs() < 5);
    let session = CheckoutSession::from_json(&event.object).unwrap();
    assert!(session.is_paid());
    assert_eq!(session.metadata["paymentLinkId"], "pl-7");
    assert_eq!(session.client_reference_id.as_deref(), Some("session-42"));

    // The crate's own signer produces the same header as the independent one.
    let t = now();
    assert_eq!(
        sign_webhook(body.as_bytes(), WEBHOOK_SECRET, t),
        stripe_signature(body.as_bytes(), WEBHOOK_SECRET, t)
    );
}

#[tokio::test]
async fn a_webhook_signed_with_another_secret_is_refused() {
    let fake = start().await;
    let id = paid_session(&fake).await;
    let body = completed_event(&fake, &id);
    let header = stripe_signature(body.as_bytes(), "whsec_someone_else", now());
    assert_eq!(
        verify_webhook(body.as_bytes(), &header, WEBHOOK_SECRET, now(), 300),
        Err(WebhookError::BadSignature)
    );
}

#[tokio::test]
async fn a_tampered_webhook_body_is_refused() {
    let fake = start().await;
    let id = paid_session(&fake).await;
    let body = completed_event(&fake, &id);
    let header = stripe_signature(body.as_bytes(), WEBHOOK_SECRET, now());
    let tampered = body.replace("\"paid\"", "\"unpaid\"");
    assert_ne!(tampered, body);
    assert_eq!(
        verify_webhook(tampered.as_bytes(), &header, WEBHOOK_SECRET, now(), 300),
        Err(WebhookError::BadSignature)
    );
    // Re-serialising the JSON changes the bytes too: the raw body is what counts.
    let reserialised =
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&body).unwrap())
            .unwrap();
    assert_eq!(
        verify_webhook(reserialised.as_bytes(), &header, WEBHOOK_SECRET, now(), 300),
        Err(WebhookError::BadSignature)
    );
}

#[tokio::test]
async fn a_webhook_older_than_five_minutes_is_refused_as_stale() {
    let fake = start().await;
    let id = paid_session(&fake).await;
    let body = completed_event(&fake, &id);
    let t = now() - 301;
    let header = stripe_signature(body.as_bytes(), WEBHOOK_SECRET, t);
    let err = verify_webhook(
        body.as_bytes(),
        &header,
        WEBHOOK_SECRET,
        t + 301,
        DEFAULT_WEBHOOK_TOLERANCE_SECS,
    )
    .unwrap_err();
    assert_eq!(
        err,
        WebhookError::Stale {
            age_secs: 301,
            tolerance_secs: 300
        }
    );
    // At exactly the tolerance it is still accepted.
    assert!(verify_webhook(body.as_bytes(), &header, WEBHOOK_SECRET, t + 300, 300).is_ok());
    // A timestamp far in the future is refused the same way.
    assert!(matches!(
        verify_webhook(body.as_bytes(), &header, WEBHOOK_SECRET, t - 1000, 300),
        Err(WebhookError::Stale {
            age_secs: -1000,
            ..
        })
    ));
}

#[tokio::test]
async fn any_one_of_several_v1_signatures_may_match() {
    let fake = start().await;
    let id = paid_session(&fake).await;
    let body = completed_event(&fake, &id);
    let t = now();
    let good = stripe_signature(body.as_bytes(), WEBHOOK_SECRET, t);
    let good_v1 = good.split_once(",v1=").unwrap().1;
    let old_secret = stripe_signature(body.as_bytes(), "whsec_old_rolled_secret", t);
    let old_v1 = old_secret.split_once(",v1=").unwrap().1;

    // While a secret is being rolled Stripe signs with both; either order.
    for header in [
        format!("t={t},v1={old_v1},v1={good_v1}"),
        format!("t={t},v1={good_v1},v1={old_v1}"),
        format!(
            "t={t}, v1={}, v1={good_v1}, v0={}",
            "00".repeat(32),
            "ab".repeat(32)
        ),
        format!("t={t},v1=not-hex,v1={good_v1}"),
    ] {
        let event = verify_webhook(body.as_bytes(), &header, WEBHOOK_SECRET, t, 300);
        assert!(event.is_ok(), "{header}: {event:?}");
    }
    // The old secret still verifies the same header during the roll.
    let both = format!("t={t},v1={old_v1},v1={good_v1}");
    assert!(verify_webhook(body.as_bytes(), &both, "whsec_old_rolled_secret", t, 300).is_ok());
    // None matching is still a bad signature.
    let none = format!("t={t},v1={old_v1},v1={}", "11".repeat(32));
    assert_eq!(
        verify_webhook(body.as_bytes(), &none, WEBHOOK_SECRET, t, 300),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn a_malformed_signature_header_is_refused() {
    let body = br#"{"id":"evt_1","object":"event","type":"x","created":1,"data":{"object":{}}}"#;
    let t = now();
    let v1 = sign_webhook(body, WEBHOOK_SECRET, t);
    let v1 = v1.split_once(",v1=").unwrap().1.to_owned();
    for header in [
        String::new(),
        format!("v1={v1}"),
        format!("t=yesterday,v1={v1}"),
        format!("t={t}"),
        format!("t={t},v0={v1}"),
    ] {
        let err = verify_webhook(body, &header, WEBHOOK_SECRET, t, 300).unwrap_err();
        assert!(
            matches!(err, WebhookError::MalformedHeader(_)),
            "{header:?}: {err:?}"
        );
    }
}

#[test]
fn a_correctly_signed_body_that_is_not_an_event_is_refused() {
    let t = now();
    for body in [
        &b"not json"[..],
        br#"{"object":"event","id":"evt_1"}"#,
        br#"{"id":"cs_1","object":"checkout.session"}"#,
    ] {
        let header = sign_webhook(body, WEBHOOK_SECRET, t);
        let err = verify_webhook(body, &header, WEBHOOK_SECRET, t, 300).unwrap_err();
        assert!(matches!(err, WebhookError::InvalidPayload(_)), "{err:?}");
    }
}
