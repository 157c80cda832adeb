//! Payment-link providers: the server's own pay page (`local`) or a Stripe
//! Checkout Session (`stripe`; Stripe's Payment Links never expire, Checkout
//! Sessions do, at most 24 h after creation).

use super::stripe::{CheckoutRequest, StripeClient, StripeConfig};
use crate::config::Config;
use crate::ocpp::time::now_ms;
use crate::store::{PaymentLinkRecord, SessionRecord, SharedStore, LINK_PENDING};
use anyhow::Result;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
pub trait LinkProvider: Send + Sync {
    /// Makes a link for `amount_minor` of the session's currency, expiring
    /// after the configured lifetime. The caller stores it.
    async fn create(
        &self,
        session: &SessionRecord,
        amount_minor: i64,
        metadata: &Value,
    ) -> Result<PaymentLinkRecord>;
    /// Best effort: makes a link that is being replaced unusable at the provider.
    async fn withdraw(&self, link: &PaymentLinkRecord);
}

pub fn from_config(config: &Config, _store: SharedStore) -> Result<Arc<dyn LinkProvider>> {
    let ttl = config.payment_link_ttl;
    match config.payment_links.as_str() {
        "stripe" => {
            let key = config.stripe_secret_key.clone().ok_or_else(|| {
                anyhow::anyhow!("CSMS_PAYMENT_LINKS=stripe needs CSMS_STRIPE_SECRET_KEY")
            })?;
            anyhow::ensure!(
                ttl >= Duration::from_secs(30 * 60) && ttl <= Duration::from_secs(24 * 3600),
                "Stripe Checkout Sessions live 30 minutes to 24 hours: CSMS_PAYMENT_LINK_TTL must be within that"
            );
            let client = StripeClient::new(StripeConfig {
                base_url: config.stripe_base_url.clone(),
                secret_key: key,
                timeout: Duration::from_secs(20),
            })
            .map_err(|e| anyhow::anyhow!("Stripe client: {e}"))?;
            Ok(Arc::new(StripeLinks {
                client,
                ttl,
                public_url: config.public_url.trim_end_matches('/').to_owned(),
            }))
        }
        _ => Ok(Arc::new(LocalLinks {
            ttl,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
        })),
    }
}

/// Where a provider's link lives; the rest of the record comes from the session.
struct Made {
    id: String,
    provider: &'static str,
    provider_ref: Option<String>,
    url: String,
    expires_at: chrono::DateTime<chrono::Utc>,
}

fn record(session: &SessionRecord, made: Made, amount: i64, metadata: &Value) -> PaymentLinkRecord {
    let now = now_ms();
    let Made {
        id,
        provider,
        provider_ref,
        url,
        expires_at,
    } = made;
    PaymentLinkRecord {
        id,
        session_id: session.id.clone(),
        user_id: session.user_id.clone(),
        provider: provider.into(),
        provider_ref,
        url,
        amount_minor: amount,
        currency: session.currency.clone(),
        status: LINK_PENDING.into(),
        metadata: metadata.clone(),
        expires_at,
        paid_at: None,
        created_at: now,
        updated_at: now,
    }
}

/// The server's own pay page, `{public_url}/pay/{link id}`.
pub struct LocalLinks {
    ttl: Duration,
    public_url: String,
}

#[async_trait]
impl LinkProvider for LocalLinks {
    async fn create(
        &self,
        session: &SessionRecord,
        amount_minor: i64,
        metadata: &Value,
    ) -> Result<PaymentLinkRecord> {
        let id = uuid::Uuid::new_v4().to_string();
        let expires_at = now_ms() + chrono::Duration::from_std(self.ttl)?;
        let url = format!("{}/pay/{id}", self.public_url);
        Ok(record(
            session,
            Made {
                id,
                provider: "local",
                provider_ref: None,
                url,
                expires_at,
            },
            amount_minor,
            metadata,
        ))
    }

    async fn withdraw(&self, _link: &PaymentLinkRecord) {
        // A local link is withdrawn by its status alone.
    }
}

pub struct StripeLinks {
    client: StripeClient,
    ttl: Duration,
    public_url: String,
}

#[async_trait]
impl LinkProvider for StripeLinks {
    async fn create(
        &self,
        session: &SessionRecord,
        amount_minor: i64,
        metadata: &Value,
    ) -> Result<PaymentLinkRecord> {
        let id = uuid::Uuid::new_v4().to_string();
        let expires_at = chrono::Utc::now().timestamp() + self.ttl.as_secs() as i64;
        // Stripe metadata values are strings.
        let mut meta: BTreeMap<String, String> = BTreeMap::new();
        if let Some(map) = metadata.as_object() {
            for (k, v) in map {
                if !v.is_null() {
                    meta.insert(
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    );
                }
            }
        }
        meta.insert("paymentLinkId".into(), id.clone());
        let request = CheckoutRequest {
            currency: session.currency.clone(),
            unit_amount: amount_minor,
            product_name: format!("Charging session at {}", session.station_name),
            success_url: format!("{}/pay/{id}?stripe=success", self.public_url),
            cancel_url: format!("{}/pay/{id}?stripe=cancel", self.public_url),
            expires_at,
            client_reference_id: Some(session.id.clone()),
            metadata: meta,
        };
        // The link id is the idempotency key: a retried create makes no second session.
        let checkout = self
            .client
            .create_checkout_session(&request, &id)
            .await
            .map_err(|e| anyhow::anyhow!("Stripe: {e}"))?;
        let url = checkout
            .url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("Stripe returned a Checkout Session without a URL"))?;
        let expires = chrono::DateTime::from_timestamp(checkout.expires_at, 0)
            .unwrap_or_else(chrono::Utc::now);
        Ok(record(
            session,
            Made {
                id,
                provider: "stripe",
                provider_ref: Some(checkout.id),
                url,
                expires_at: expires,
            },
            amount_minor,
            metadata,
        ))
    }

    async fn withdraw(&self, link: &PaymentLinkRecord) {
        if let Some(reference) = &link.provider_ref {
            if let Err(e) = self.client.expire_checkout_session(reference).await {
                tracing::warn!(link = %link.id, "could not expire the Stripe Checkout Session: {e}");
            }
        }
    }
}
