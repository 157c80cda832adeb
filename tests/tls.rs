//! Security profile 2: Basic auth over TLS (rustls), with a certificate and
//! key configured. A charger that trusts the server's certificate connects
//! with `wss://`; plain `ws://` no longer works on that listener.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chargers_connect_over_tls_with_basic_auth() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
    })
    .await;
    let hash = csms::charger::auth::hash_password("profile-two-password-123");
    server
        .state
        .store
        .provision_charger("CP-TLS", None, Some(Some(hash)))
        .await
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let url = format!("wss://localhost:{}/ocpp/CP-TLS", server.port);

    let connect = |password: &'static str| {
        let url = url.clone();
        let client = client.clone();
        async move {
            use base64::Engine;
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("ocpp1.6"),
            );
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("CP-TLS:{password}"));
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
            );
            tokio_tungstenite::connect_async_tls_with_config(
                request,
                None,
                false,
                Some(tokio_tungstenite::Connector::Rustls(client)),
            )
            .await
        }
    };

    assert_eq!(refused_status(connect("wrong").await.unwrap_err()), 401);
    let (socket, _) = connect("profile-two-password-123")
        .await
        .expect("wss with the right password");
    let mut charger = TestCharger::from_socket(socket);
    assert_eq!(charger.boot().await["status"], "Accepted");
    charger.call("Heartbeat", json!({})).await;

    // The listener speaks only TLS now.
    assert!(try_connect(
        &format!("ws://127.0.0.1:{}/ocpp/CP-TLS", server.port),
        ConnectOptions::default()
    )
    .await
    .is_err());
    server.stop().await;
}
