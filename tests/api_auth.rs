//! Authentication end to end: registration and login, bearer tokens (HS256
//! only, expiry, not-before, roles), the admin gate, and `csms token`.

mod common;
use common::*;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::process::Command;

on_both_backends!(
    register_answers_201_with_a_token_that_works_on_me,
    login_with_the_right_password_answers_a_working_token,
    a_wrong_password_or_an_unknown_email_is_401_invalid_credentials,
    a_duplicate_email_is_409,
    concurrent_registrations_of_one_email_make_one_account,
    malformed_registrations_are_400_naming_the_field_and_write_nothing,
    a_request_without_a_token_is_401_missing_token,
    a_token_signed_with_another_secret_is_401,
    an_unsigned_alg_none_token_is_401,
    an_hs512_token_signed_with_the_right_secret_is_401,
    an_expired_token_is_401_token_expired,
    a_token_whose_nbf_is_in_the_future_is_401,
    a_minimal_token_for_a_subject_not_stored_works_on_the_driver_api,
    a_role_other_than_driver_or_admin_is_401,
    a_driver_token_on_an_admin_route_is_403_and_an_admin_token_works,
    a_token_printed_by_csms_token_is_accepted_by_the_server,
    without_a_configured_secret_the_generated_one_is_kept_in_the_database,
);

/// The test server's secret (`Config::for_tests`).
const SECRET: &str = "test-secret-test-secret-test-secret";
const PASSWORD: &str = "correct-horse-9";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    // The server's own jsonwebtoken crypto (HMAC only), as it is in the server.
    csms::api::auth::install_hmac_crypto();
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a test token")
}

/// Claims valid for an hour.
fn claims(sub: &str, role: &str) -> Value {
    json!({"sub": sub, "role": role, "exp": now() + 3600})
}

/// Asserts the failure envelope with `status` and `code`.
fn assert_failure(status: u16, body: &Value, expected_status: u16, expected_code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], expected_code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a human sentence in error: {body}"
    );
}

async fn me(server: &TestServer, token: &str) -> (u16, Value) {
    server.api("GET", "/api/auth/me", Some(token), None).await
}

async fn register_answers_201_with_a_token_that_works_on_me(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .api(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["success"], true);
    let user = &body["data"]["user"];
    let id = user["id"].as_str().expect("a user id").to_owned();
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["name"], "Ada");
    assert_eq!(user["role"], "driver");
    assert!(user["createdAt"].is_string(), "{user}");
    assert!(
        !body.to_string().contains(PASSWORD) && !body.to_string().contains("argon2"),
        "neither the password nor its hash is answered: {body}"
    );
    let token = body["data"]["token"].as_str().expect("a token");

    let (status, me_body) = me(&server, token).await;
    assert_eq!(status, 200, "{me_body}");
    assert_eq!(me_body["success"], true);
    assert_eq!(me_body["data"]["id"], id.as_str());
    assert_eq!(me_body["data"]["email"], "ada@example.com");
    assert_eq!(me_body["data"]["role"], "driver");
    // And it works on the driver API.
    let (status, sessions) = server
        .api("GET", "/api/charging/sessions", Some(token), None)
        .await;
    assert_eq!(status, 200, "{sessions}");
    assert_eq!(sessions["data"], json!([]));
    server.stop().await;
}

async fn login_with_the_right_password_answers_a_working_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, _) = server.register("grace@example.com").await;
    // Emails are matched without regard to case.
    for email in ["grace@example.com", "GRACE@example.com"] {
        let (status, body) = server
            .api(
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, 200, "{email}: {body}");
        assert_eq!(body["success"], true);
        assert_eq!(body["data"]["user"]["id"], id.as_str());
        assert_eq!(body["data"]["user"]["email"], "grace@example.com");
        let token = body["data"]["token"].as_str().expect("a token");
        let (status, me_body) = me(&server, token).await;
        assert_eq!(status, 200, "{me_body}");
        assert_eq!(me_body["data"]["id"], id.as_str());
    }
    server.stop().await;
}

async fn a_wrong_password_or_an_unknown_email_is_401_invalid_credentials(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("linus@example.com").await;
    // A user made by an operator has no password at all.
    server.user_with_tag("no-password", "TAG-NP").await;
    let mut messages = Vec::new();
    for (email, password) in [
        ("linus@example.com", "not-the-password"),
        ("nobody@example.com", PASSWORD),
        ("no-password@example.com", PASSWORD),
    ] {
        let (status, body) = server
            .api(
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_failure(status, &body, 401, "INVALID_CREDENTIALS");
        assert!(
            body.get("data").is_none() || body["data"].is_null(),
            "{body}"
        );
        messages.push(body["error"].clone());
    }
    // The answer does not tell which of the two was wrong.
    assert_eq!(messages[0], messages[1]);
    server.stop().await;
}

async fn a_duplicate_email_is_409(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (first_id, _) = server.register("dup@example.com").await;
    for email in ["dup@example.com", "DUP@Example.COM"] {
        let (status, body) = server
            .api(
                "POST",
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "another-password-1", "name": "Other"})),
            )
            .await;
        assert_failure(status, &body, 409, "EMAIL_TAKEN");
    }
    // The first account is untouched: its password still logs in, as the same user.
    let (status, body) = server
        .api(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "dup@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user"]["id"], first_id.as_str());
    assert_eq!(body["data"]["user"]["name"], "Driver");
    server.stop().await;
}

async fn concurrent_registrations_of_one_email_make_one_account(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = server.http_url("/api/auth/register");
    let attempts: Vec<_> = (0..6)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                let response = http()
                    .post(url)
                    .json(&json!({"email": "race@example.com", "password": format!("password-{n}-long"), "name": format!("Racer {n}")}))
                    .send()
                    .await
                    .expect("HTTP request");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("JSON body"))
            })
        })
        .collect();
    let mut created = Vec::new();
    for attempt in attempts {
        let (status, body) = attempt.await.unwrap();
        match status {
            201 => created.push(body),
            409 => assert_eq!(body["code"], "EMAIL_TAKEN", "{body}"),
            other => panic!("only 201 or 409, got {other}: {body}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one account: {created:?}");
    let name = created[0]["data"]["user"]["name"].as_str().unwrap();
    let n: String = name.chars().filter(char::is_ascii_digit).collect();
    let (status, body) = server
        .api(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "race@example.com", "password": format!("password-{n}-long")})),
        )
        .await;
    assert_eq!(status, 200, "the winner's password logs in: {body}");
    assert_eq!(body["data"]["user"]["id"], created[0]["data"]["user"]["id"]);
    server.stop().await;
}

async fn malformed_registrations_are_400_naming_the_field_and_write_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let email = "careful@example.com";
    let cases: Vec<(Value, &str)> = vec![
        (json!({"email": email, "name": "C"}), "password"),
        (
            json!({"email": email, "password": "short", "name": "C"}),
            "password",
        ),
        (
            json!({"email": email, "password": 12345678, "name": "C"}),
            "password",
        ),
        (
            json!({"email": "not-an-email", "password": PASSWORD, "name": "C"}),
            "email",
        ),
        (
            json!({"email": "a@b", "password": PASSWORD, "name": "C"}),
            "email",
        ),
        (
            json!({"email": 42, "password": PASSWORD, "name": "C"}),
            "email",
        ),
        (json!({"password": PASSWORD, "name": "C"}), "email"),
        (json!({"email": email, "password": PASSWORD}), "name"),
        (
            json!({"email": email, "password": PASSWORD, "name": ["C"]}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = server
            .api("POST", "/api/auth/register", None, Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["success"], false, "{answer}");
        assert!(answer["error"].is_string(), "{answer}");
        assert!(answer["code"].is_string(), "{answer}");
        assert_eq!(answer["details"]["field"], field, "{body} → {answer}");
    }
    // Bodies that are not a JSON object at all.
    for raw in ["{not json", "", "[1, 2, 3]", "\"a string\"", "null"] {
        let (status, answer) = server
            .api_raw("POST", "/api/auth/register", None, raw)
            .await;
        assert_eq!(status, 400, "{raw:?} → {answer}");
        assert_eq!(answer["success"], false, "{raw:?} → {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        assert!(answer["code"].is_string(), "{answer}");
    }
    // Login refuses malformed bodies the same way.
    let (status, answer) = server
        .api_raw("POST", "/api/auth/login", None, "{\"email\":")
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["success"], false);
    let (status, answer) = server
        .api(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": email, "password": 5})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["details"]["field"], "password");

    // Nothing was written: the email is still free.
    let (status, answer) = server
        .api(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_failure(status, &answer, 401, "INVALID_CREDENTIALS");
    server.register(email).await;
    server.stop().await;
}

async fn a_request_without_a_token_is_401_missing_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in [
        "/api/auth/me",
        "/api/charging/sessions",
        "/api/admin/stations",
    ] {
        let (status, body) = server.api("GET", path, None, None).await;
        assert_failure(status, &body, 401, "MISSING_TOKEN");
    }
    // A header that is not a bearer token is no token either.
    let response = http()
        .get(server.http_url("/api/auth/me"))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "MISSING_TOKEN");
    server.stop().await;
}

/// Asserts `token` is refused on the driver and admin APIs, and that the same
/// claims signed properly are accepted (so the refusal is about the token).
async fn assert_refused(server: &TestServer, token: &str, proper: &Value, code: &str) {
    for path in [
        "/api/auth/me",
        "/api/charging/sessions",
        "/api/admin/stations",
    ] {
        let (status, body) = server.api("GET", path, Some(token), None).await;
        assert_failure(status, &body, 401, code);
    }
    let good = sign(Algorithm::HS256, SECRET, proper);
    let (status, body) = server
        .api("GET", "/api/admin/stations", Some(&good), None)
        .await;
    assert_eq!(
        status, 200,
        "the properly signed control is accepted: {body}"
    );
}

async fn a_token_signed_with_another_secret_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let claims = claims("ops", "admin");
    let forged = sign(Algorithm::HS256, "some-other-secret-entirely-123", &claims);
    assert_refused(&server, &forged, &claims, "INVALID_TOKEN").await;
    // A tampered payload under a genuine signature is refused too.
    let genuine = sign(Algorithm::HS256, SECRET, &self::claims("ops", "driver"));
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let (status, body) = me(&server, &tampered).await;
    assert_failure(status, &body, 401, "INVALID_TOKEN");
    server.stop().await;
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn an_unsigned_alg_none_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let claims = claims("ops", "admin");
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    assert_refused(&server, &unsigned, &claims, "INVALID_TOKEN").await;
    // Spelled differently, or with a signature glued on: still refused.
    let genuine = sign(Algorithm::HS256, SECRET, &claims);
    let signature = genuine.rsplit('.').next().unwrap();
    for header in [json!({"alg": "None", "typ": "JWT"}), json!({"alg": "NONE"})] {
        for sig in ["", signature] {
            let token = format!("{}.{}.{}", b64(&header), b64(&claims), sig);
            let (status, body) = me(&server, &token).await;
            assert_failure(status, &body, 401, "INVALID_TOKEN");
        }
    }
    server.stop().await;
}

async fn an_hs512_token_signed_with_the_right_secret_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let claims = claims("ops", "admin");
    for alg in [Algorithm::HS512, Algorithm::HS384] {
        let token = sign(alg, SECRET, &claims);
        assert_refused(&server, &token, &claims, "INVALID_TOKEN").await;
    }
    server.stop().await;
}

async fn an_expired_token_is_401_token_expired(backend: Backend) {
    let server = TestServer::start(backend).await;
    let expired = json!({"sub": "ops", "role": "admin", "exp": now() - 120, "iat": now() - 3600});
    let token = sign(Algorithm::HS256, SECRET, &expired);
    assert_refused(&server, &token, &claims("ops", "admin"), "TOKEN_EXPIRED").await;
    // exp is required: a token without one is refused.
    let forever = sign(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "ops", "role": "admin"}),
    );
    let (status, body) = me(&server, &forever).await;
    assert_failure(status, &body, 401, "INVALID_TOKEN");
    server.stop().await;
}

async fn a_token_whose_nbf_is_in_the_future_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let early = json!({"sub": "ops", "role": "admin", "exp": now() + 7200, "nbf": now() + 600});
    let token = sign(Algorithm::HS256, SECRET, &early);
    for path in ["/api/auth/me", "/api/admin/stations"] {
        let (status, body) = server.api("GET", path, Some(&token), None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["success"], false);
        assert!(body["code"].is_string(), "{body}");
    }
    // nbf and iat in the past are fine.
    let honest = json!({"sub": "ops", "role": "admin", "exp": now() + 7200, "nbf": now() - 10, "iat": now() - 10});
    let token = sign(Algorithm::HS256, SECRET, &honest);
    let (status, body) = server
        .api("GET", "/api/admin/stations", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    server.stop().await;
}

async fn a_minimal_token_for_a_subject_not_stored_works_on_the_driver_api(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = sign(
        Algorithm::HS256,
        SECRET,
        &claims("driver-not-yet-stored", "driver"),
    );
    let (status, body) = server
        .api("GET", "/api/charging/sessions", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"], json!([]));
    let (status, body) = me(&server, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["id"], "driver-not-yet-stored");
    assert_eq!(body["data"]["role"], "driver");
    server.stop().await;
}

async fn a_role_other_than_driver_or_admin_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    for bad in [
        json!({"sub": "ops", "role": "superuser", "exp": now() + 3600}),
        json!({"sub": "ops", "role": "Admin", "exp": now() + 3600}),
        json!({"sub": "ops", "role": "", "exp": now() + 3600}),
        json!({"sub": "ops", "exp": now() + 3600}),
        json!({"sub": "", "role": "admin", "exp": now() + 3600}),
        json!({"role": "admin", "exp": now() + 3600}),
    ] {
        let token = sign(Algorithm::HS256, SECRET, &bad);
        for path in [
            "/api/auth/me",
            "/api/charging/sessions",
            "/api/admin/stations",
        ] {
            let (status, body) = server.api("GET", path, Some(&token), None).await;
            assert_eq!(status, 401, "{bad} on {path}: {body}");
            assert_eq!(body["success"], false, "{body}");
            assert_eq!(body["code"], "INVALID_TOKEN", "{bad}: {body}");
        }
    }
    server.stop().await;
}

async fn a_driver_token_on_an_admin_route_is_403_and_an_admin_token_works(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, driver) = server.register("driver@example.com").await;
    let (status, body) = server
        .api("GET", "/api/admin/stations", Some(&driver), None)
        .await;
    assert_failure(status, &body, 403, "FORBIDDEN");
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-DRIVER",
            Some(&driver),
            Some(json!({"name": "Mine now", "pricePerKWh": 0, "currency": "NGN"})),
        )
        .await;
    assert_failure(status, &body, 403, "FORBIDDEN");

    let admin = server.token("ops", "admin");
    let (status, body) = server
        .api("GET", "/api/admin/stations", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert!(body["data"].is_array(), "{body}");
    // The driver's attempt wrote nothing.
    let (status, body) = server
        .api("GET", "/api/admin/stations/CP-DRIVER", Some(&admin), None)
        .await;
    assert_failure(status, &body, 404, "NOT_FOUND");
    server.stop().await;
}

/// Runs `csms token` against `database_url` and returns (token, stderr).
async fn csms_token(
    database_url: &str,
    secret: Option<&str>,
    user: &str,
    role: &str,
) -> (String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_csms"));
    command
        .args([
            "--database-url",
            database_url,
            "token",
            "--user",
            user,
            "--role",
            role,
        ])
        .env("NO_COLOR", "1")
        .env_remove("CSMS_DATABASE_URL")
        .env_remove("CSMS_JWT_SECRET")
        .env_remove("CSMS_LOG");
    if let Some(secret) = secret {
        command.env("CSMS_JWT_SECRET", secret);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("csms token finishes in time")
        .expect("csms binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "csms token failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 token");
    let token = stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT on stdout: {stdout:?}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the token on stdout: {stdout:?}"
    );
    (token, stderr)
}

async fn a_token_printed_by_csms_token_is_accepted_by_the_server(backend: Backend) {
    let secret = "operator-secret-0123456789-abcdef";
    let db = TestDatabase::new(backend).await;
    let (admin, _) = csms_token(&db.url, Some(secret), "ops", "admin").await;
    let (driver, _) = csms_token(&db.url, Some(secret), "first-driver", "driver").await;
    let server = TestServer::start_on(db, |c| c.jwt_secret = Some(secret.into())).await;

    let (status, body) = server
        .api("GET", "/api/admin/stations", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let (status, body) = me(&server, &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["id"], "ops");
    assert_eq!(body["data"]["role"], "admin");
    // The operator can bootstrap: create a stored user with the printed token.
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/users/ops",
            Some(&admin),
            Some(json!({"name": "Operations", "email": "ops@example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["role"], "admin");

    let (status, body) = server
        .api("GET", "/api/admin/stations", Some(&driver), None)
        .await;
    assert_failure(status, &body, 403, "FORBIDDEN");
    let (status, body) = server
        .api("GET", "/api/charging/sessions", Some(&driver), None)
        .await;
    assert_eq!(status, 200, "{body}");

    // A token under the default test secret means nothing to this server.
    let foreign = sign(Algorithm::HS256, SECRET, &claims("ops", "admin"));
    let (status, body) = me(&server, &foreign).await;
    assert_failure(status, &body, 401, "INVALID_TOKEN");
    server.stop().await;
}

async fn get_with(port: u16, path: &str, token: &str) -> (u16, Value) {
    let response = http()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn without_a_configured_secret_the_generated_one_is_kept_in_the_database(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let (admin, stderr) = csms_token(&db.url, None, "ops", "admin").await;
    assert!(
        stderr.contains("CSMS_JWT_SECRET"),
        "generating a secret is warned about in the log: {stderr}"
    );
    // A second run agrees with the first (same secret, kept in the database).
    let (again, _) = csms_token(&db.url, None, "ops2", "admin").await;

    let (mut server, port) = spawn_csms(&db.url, None).await;
    for token in [&admin, &again] {
        let (status, body) = get_with(port, "/api/admin/stations", token).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true);
        assert!(
            body["data"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["id"] == "evliter-lagos-victoria-island")),
            "{body}"
        );
    }
    let (status, body) = get_with(port, "/api/auth/me", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["id"], "ops");
    // The server does not accept just anything: a token under another secret is refused.
    let foreign = sign(Algorithm::HS256, SECRET, &claims("ops", "admin"));
    let (status, body) = get_with(port, "/api/admin/stations", &foreign).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "INVALID_TOKEN");
    server.start_kill().expect("stop the server");
    let _ = server.wait().await;
}
