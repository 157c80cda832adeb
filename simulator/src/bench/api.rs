//! What the benchmark asks a server over HTTP: `GET /health` (both servers)
//! and, from the csms server, `GET /api/admin/ingest` with an admin token.
//!
//! The token is an HS256 JWT signed here with the secret the bench started
//! the server with (`sub`, `role`, `iat`, `exp`, as `csms token` issues), so
//! the bench needs no second process touching the database while it runs.

use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

/// The server's answer to `GET /api/admin/ingest`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestCounts {
    pub meter_value_messages: i64,
    pub sampled_values: i64,
    pub logged_frames: i64,
}

pub struct Api {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(port: u16, token: Option<String>) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            // Counting millions of rows may take a while on a busy machine.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("an HTTP client without TLS builds"),
            token,
        }
    }

    /// True once `GET /health` answers 200.
    pub async fn healthy(&self) -> bool {
        let request = self
            .client
            .get(format!("{}/health", self.base))
            .timeout(Duration::from_secs(2));
        matches!(request.send().await, Ok(r) if r.status().is_success())
    }

    pub async fn ingest_counts(&self) -> anyhow::Result<IngestCounts> {
        #[derive(Deserialize)]
        struct Envelope {
            data: IngestCounts,
        }
        let token = self.token.as_deref().context("no admin token")?;
        let response = self
            .client
            .get(format!("{}/api/admin/ingest", self.base))
            .bearer_auth(token)
            .send()
            .await
            .context("GET /api/admin/ingest")?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "GET /api/admin/ingest answered {status}: {body}"
        );
        let envelope: Envelope = serde_json::from_str(&body)
            .with_context(|| format!("GET /api/admin/ingest answered {body}"))?;
        Ok(envelope.data)
    }
}

/// An HS256 bearer token for `user` with `role`, valid for `ttl`.
pub fn token(secret: &str, user: &str, role: &str, ttl: Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"sub": user, "role": role, "iat": now, "exp": now + ttl.as_secs()}).to_string(),
    );
    let signed = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(signed.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_three_parts_with_an_hs256_signature() {
        let t = token(
            "0123456789abcdef",
            "bench",
            "admin",
            Duration::from_secs(60),
        );
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            (claims["sub"].as_str(), claims["role"].as_str()),
            (Some("bench"), Some("admin"))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .expect("signature verifies");
    }
}
