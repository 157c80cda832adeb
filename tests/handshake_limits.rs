//! Failed handshakes are rate-limited so that a flood of bad passwords costs
//! the attacker, never an honest charger: a handshake with the right password
//! is never refused because someone else failed, whatever identity or
//! address the failures used (OCPP.md, "Connection").

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const VICTIM: &str = "CP-VICTIM";
const PASSWORD: &str = "victims-own-authorization-key";

on_both_backends!(
    a_flood_of_bad_passwords_under_a_chargers_identity_never_locks_it_out,
    a_flood_from_one_address_never_locks_out_chargers_behind_it,
);

/// A refused handshake: its status and its Retry-After, if any.
fn refusal(error: tokio_tungstenite::tungstenite::Error) -> (u16, Option<u64>) {
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        ),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// One attempt under `identity` with `password`, from this test (loopback,
/// the same address as every other charger here).
async fn attempt(
    server: &TestServer,
    identity: &str,
    password: &str,
) -> Result<Socket, (u16, Option<u64>)> {
    try_connect(
        &server.ws_url(identity),
        ConnectOptions {
            basic_auth: Some((identity, password)),
            ..Default::default()
        },
    )
    .await
    .map(|(socket, _)| socket)
    .map_err(refusal)
}

/// The charger with its own password connects and is served.
async fn honest_charger_is_served(server: &TestServer, identity: &str, password: &str) {
    let socket = attempt(server, identity, password)
        .await
        .unwrap_or_else(|refused| {
            panic!("{identity} with the right password refused: {refused:?}")
        });
    let mut charger = TestCharger::from_socket(socket);
    assert_eq!(charger.boot().await["status"], "Accepted");
    assert!(charger.call("Heartbeat", json!({})).await["currentTime"].is_string());
    charger.close().await;
}

async fn a_flood_of_bad_passwords_under_a_chargers_identity_never_locks_it_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .state
        .store
        .provision_charger(
            VICTIM,
            None,
            Some(Some(csms::charger::auth::hash_password(PASSWORD))),
        )
        .await
        .unwrap();

    // The attacker guesses under the victim's identity from the victim's
    // own address: ten plain refusals, then 429 with Retry-After, each
    // answered only after a delay that costs the attacker time.
    let mut refusals = Vec::new();
    let mut slow = Duration::ZERO;
    for n in 0..14 {
        let started = Instant::now();
        let refused = attempt(&server, VICTIM, &format!("guess-{n}"))
            .await
            .expect_err("a wrong password is refused");
        if refused.0 == 429 {
            slow += started.elapsed();
        }
        refusals.push(refused);
        if n == 11 {
            // In the middle of the flood the victim reconnects, and is served.
            honest_charger_is_served(&server, VICTIM, PASSWORD).await;
        }
    }
    assert!(
        refusals[..10].iter().all(|r| *r == (401, None)),
        "{refusals:?}"
    );
    assert!(
        refusals[10..]
            .iter()
            .all(|r| r.0 == 429 && r.1.is_some_and(|s| (1..=60).contains(&s))),
        "{refusals:?}"
    );
    assert!(
        slow >= Duration::from_millis(4 * 200),
        "the flood is slowed down: {slow:?}"
    );
    // A missing password is a failure like a wrong one.
    let missing = try_connect(&server.ws_url(VICTIM), ConnectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refusal(missing).0, 429);

    // After the flood, still: the victim with its password is served, again
    // and again.
    for _ in 0..3 {
        honest_charger_is_served(&server, VICTIM, PASSWORD).await;
    }
    server.stop().await;
}

async fn a_flood_from_one_address_never_locks_out_chargers_behind_it(backend: Backend) {
    use csms::config::UnknownChargers;
    // Unknown identities are refused (404), so guesses under made-up
    // identities fail as well.
    let server =
        TestServer::start_with(backend, |c| c.unknown_chargers = UnknownChargers::Reject).await;
    for (identity, password) in [(VICTIM, Some(PASSWORD)), ("CP-OPEN", None)] {
        server
            .state
            .store
            .provision_charger(
                identity,
                None,
                password.map(|p| Some(csms::charger::auth::hash_password(p))),
            )
            .await
            .unwrap();
    }
    // Failures under many identities from one address (a NAT the victim
    // shares): the address goes over the limit.
    let mut statuses = Vec::new();
    for n in 0..12 {
        let identity = format!("CP-MADE-UP-{n}");
        statuses.push(attempt(&server, &identity, "guess").await.err().unwrap().0);
    }
    assert_eq!(statuses[..10], [404; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 2], "{statuses:?}");
    // A bad password under a real identity from that address: 429 too.
    assert_eq!(
        attempt(&server, VICTIM, "guess").await.err().unwrap().0,
        429
    );

    // The chargers behind that address are served: one with its password,
    // one that has none.
    honest_charger_is_served(&server, VICTIM, PASSWORD).await;
    let mut open = TestCharger::connect(&server.ws_url("CP-OPEN")).await;
    assert_eq!(open.boot().await["status"], "Accepted");
    open.close().await;
    server.stop().await;
}
