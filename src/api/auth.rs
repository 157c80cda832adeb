//! Bearer tokens: HS256 JWTs with `sub`, `role` and `exp`, and nothing but
//! HS256 accepted.

use anyhow::{Context, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

pub const ROLES: &[&str] = &["driver", "admin"];

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// The configured secret, or the one generated on first start and kept in
    /// the database so that every restart (and every node) agrees on it.
    pub async fn load(configured: Option<&str>, store: &dyn Store) -> Result<Self> {
        if let Some(secret) = configured {
            anyhow::ensure!(
                secret.len() >= 16,
                "CSMS_JWT_SECRET must be at least 16 characters"
            );
            return Ok(Self::new(secret.as_bytes()));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let candidate = hex::encode(bytes);
        let kept = store
            .setting_or_insert("jwt_secret", &candidate)
            .await
            .context("keeping the JWT secret")?;
        if kept == candidate {
            tracing::warn!(
                "CSMS_JWT_SECRET is unset: generated a secret and kept it in the database"
            );
        }
        Ok(Self::new(kept.as_bytes()))
    }

    pub fn issue(&self, user_id: &str, role: &str, lifetime: Duration) -> Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            role: role.to_owned(),
            exp: now + lifetime.as_secs(),
            iat: Some(now),
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing a token")
    }

    /// Checks signature (HS256 only), `exp` (required) and `nbf` (if present).
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies_and_a_foreign_one_does_not() {
        let keys = JwtKeys::new(b"0123456789abcdef0123");
        let token = keys.issue("u1", "admin", Duration::from_secs(60)).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role.as_str()), ("u1", "admin"));
        assert!(JwtKeys::new(b"another-secret-entirely")
            .verify(&token)
            .is_err());
    }
}
