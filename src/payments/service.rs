//! The payment flow around the session engine: a balance check before a
//! session starts, a hold on the prepaid wallet while it runs, a payment link
//! for the final amount when it ends, and settlement (from the wallet on the
//! local pay page, or by Stripe's webhook).
//!
//! No path charges a session twice: the payment step of a session is claimed
//! once (`payment_due` is cleared in the same transaction that releases its
//! hold and stores its first link), a session has at most one live link and
//! one paid link (unique indexes), and the ledger takes one settlement per
//! session.

use super::ledger;
use super::links::{self, LinkProvider};
use crate::config::Config;
use crate::engine::money::{major_json, minor_digits};
use crate::engine::service::Caller;
use crate::engine::{Engine, EngineError, StartRequest};
use crate::ocpp::time::{format_ms, now_ms};
use crate::store::*;
use chrono::Utc;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The largest amount a client may name (a wallet credit, an expected or a
/// final cost), in units of the currency: the cost of the largest session the
/// API accepts (1,000 kWh at the highest price, 1,000,000 per kWh), and far
/// from overflowing a sum of minor units.
pub const MAX_AMOUNT: i64 = 1_000_000_000;

/// [`MAX_AMOUNT`] in minor units of `currency`.
pub fn max_amount_minor(currency: &str) -> i64 {
    MAX_AMOUNT * 10i64.pow(minor_digits(currency))
}

pub const SUFFICIENT: &str = "SUFFICIENT";
pub const INSUFFICIENT: &str = "INSUFFICIENT";
pub const ERROR: &str = "ERROR";

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("Insufficient balance")]
    Insufficient(Box<BalanceCheckRecord>),
    #[error("Balance check failed: {}", .0.error_message.clone().unwrap_or_default())]
    CheckFailed(Box<BalanceCheckRecord>),
    /// The wallet cannot cover a payment (a settlement or a hold); nothing
    /// was taken from it.
    #[error("{0}")]
    InsufficientFunds(String),
    #[error("Payment link not found")]
    LinkNotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Provider(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<anyhow::Error> for PaymentError {
    fn from(e: anyhow::Error) -> Self {
        // The store refuses a movement that would overdraw a wallet.
        if let Some(short) = e.downcast_ref::<ledger::Overdraft>() {
            return PaymentError::InsufficientFunds(format!(
                "The wallet holds {} {currency}, {} {currency} is needed",
                major_json(short.balance_minor, &short.currency),
                major_json(short.debit_minor, &short.currency),
                currency = short.currency,
            ));
        }
        PaymentError::Engine(EngineError::Internal(e))
    }
}

/// What `POST /api/v1/session/start` asks for.
#[derive(Debug, Clone)]
pub struct PaidStart {
    pub user_id: String,
    pub charger_id: String,
    pub wallet_address: String,
    pub chain: String,
    /// `expectedMaxCost` as sent (major units of the station's currency).
    pub expected_max_cost: Value,
    pub connector_id: String,
    pub metadata: Value,
}

pub struct StopResult {
    pub session: SessionRecord,
    /// The session's link, once it has ended and costs something.
    pub link: Option<PaymentLinkRecord>,
    /// The charger has not confirmed the stop yet; the link comes later.
    pub stopping: bool,
}

#[derive(Clone)]
pub struct Payments {
    store: SharedStore,
    engine: Engine,
    config: Arc<Config>,
    evm: Option<Arc<super::evm::EvmBalanceProvider>>,
    /// Chains whose balances the EVM provider reads (lower case).
    evm_chains: Arc<Vec<String>>,
    links: Arc<dyn LinkProvider>,
}

impl Payments {
    /// Builds the providers the configuration names; a bad setting stops start-up.
    pub fn new(store: SharedStore, engine: Engine, config: Arc<Config>) -> anyhow::Result<Self> {
        let evm_chains = Self::evm_chains(&config)?;
        let evm = if evm_chains.is_empty() {
            None
        } else {
            let rpc_url = config.evm_rpc_url.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "CSMS_BALANCE_PROVIDERS names evm chains but CSMS_EVM_RPC_URL is unset"
                )
            })?;
            let provider = super::evm::EvmBalanceProvider::new(super::evm::EvmConfig {
                rpc_url,
                token_contract: config.evm_token_contract.clone(),
                decimals: config.evm_decimals,
                rate: config.evm_rate.clone(),
                timeout: config.evm_timeout,
            })
            .map_err(|e| anyhow::anyhow!("EVM balance provider: {e}"))?;
            Some(Arc::new(provider))
        };
        let links = links::from_config(&config, store.clone())?;
        Ok(Payments {
            store,
            engine,
            config,
            evm,
            evm_chains: Arc::new(evm_chains),
            links,
        })
    }

    fn evm_chains(config: &Config) -> anyhow::Result<Vec<String>> {
        let mut chains = Vec::new();
        for pair in config
            .balance_providers
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (chain, provider) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("CSMS_BALANCE_PROVIDERS: {pair:?} is not chain=provider")
            })?;
            match provider.trim() {
                "evm" => chains.push(chain.trim().to_lowercase()),
                "ledger" => {}
                other => anyhow::bail!(
                    "CSMS_BALANCE_PROVIDERS: unknown provider {other:?} (use ledger or evm)"
                ),
            }
        }
        Ok(chains)
    }

    pub fn provider_for(&self, chain: &str) -> &'static str {
        if self.evm_chains.contains(&chain.to_lowercase()) {
            "evm"
        } else {
            "ledger"
        }
    }

    /// Runs a balance check and keeps it, whatever its outcome.
    pub async fn check_balance(
        &self,
        user_id: &str,
        wallet_address: &str,
        chain: &str,
        currency: &str,
        requested_minor: i64,
        metadata: Value,
    ) -> anyhow::Result<BalanceCheckRecord> {
        let provider = self.provider_for(chain);
        let balance: Result<i64, String> = match provider {
            "evm" => match &self.evm {
                Some(evm) => evm
                    .balance_minor(wallet_address, minor_digits(currency))
                    .await
                    .map(|b| i64::try_from(b).unwrap_or(i64::MAX))
                    .map_err(|e| e.to_string()),
                None => Err("no EVM provider is configured".into()),
            },
            _ => self
                .store
                .ledger_balance(&ledger::wallet_account(user_id, wallet_address), currency)
                .await
                .map_err(|e| {
                    tracing::error!("ledger balance: {e:#}");
                    "the wallet ledger could not be read".to_owned()
                }),
        };
        let now = now_ms();
        let (status, actual, error) = match balance {
            Ok(b) if b >= requested_minor => (SUFFICIENT, Some(b), None),
            Ok(b) => (INSUFFICIENT, Some(b), None),
            Err(e) => (ERROR, None, Some(e)),
        };
        let check = BalanceCheckRecord {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.to_owned(),
            wallet_address: wallet_address.to_owned(),
            chain: chain.to_owned(),
            currency: currency.to_owned(),
            requested_amount_minor: requested_minor,
            actual_balance_minor: actual,
            status: status.into(),
            provider: provider.into(),
            error_message: error,
            metadata,
            session_id: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_balance_check(&check).await?;
        Ok(check)
    }

    /// Balance check first; then the session, through the engine (which
    /// tells the charger to start); then the hold on the wallet. The API has
    /// refused an unknown or offline charger before this, so no check is
    /// recorded for a start that cannot happen.
    pub async fn start(
        &self,
        request: PaidStart,
    ) -> Result<(SessionRecord, BalanceCheckRecord), PaymentError> {
        let (currency, _) = self.tariff_of(&request.charger_id).await?;
        let requested =
            crate::engine::money::parse_amount_minor(&request.expected_max_cost, &currency)
                .filter(|m| *m > 0 && *m <= max_amount_minor(&currency))
                .ok_or_else(|| EngineError::Invalid {
                    field: "expectedMaxCost",
                    message: format!(
                        "expectedMaxCost must be a positive amount of {currency} up to {MAX_AMOUNT}, with at most {} decimals",
                        minor_digits(&currency)
                    ),
                })?;
        let check = self
            .check_balance(
                &request.user_id,
                &request.wallet_address,
                &request.chain,
                &currency,
                requested,
                request.metadata.clone(),
            )
            .await?;
        match check.status.as_str() {
            INSUFFICIENT => return Err(PaymentError::Insufficient(Box::new(check))),
            ERROR => return Err(PaymentError::CheckFailed(Box::new(check))),
            _ => {}
        }
        let session = self
            .engine
            .start(StartRequest {
                user_id: request.user_id.clone(),
                station_id: request.charger_id.clone(),
                connector_id: request.connector_id.clone(),
                battery_level_start: None,
            })
            .await?;
        if check.provider == "ledger" && self.config.ledger_reserve {
            let entries = ledger::hold(
                &request.user_id,
                &request.wallet_address,
                &currency,
                requested,
            );
            // The hold is taken before the payment is attached, so a session
            // whose hold failed has no release owed. It fails when the wallet
            // was spent between the check and now (a link paid meanwhile):
            // the session cannot be covered, so it does not run.
            if let Err(e) = self
                .store
                .ledger_post(
                    "hold",
                    &session.id,
                    "expectedMaxCost held while the session runs",
                    &entries,
                )
                .await
            {
                let owner = Caller {
                    user_id: request.user_id.clone(),
                    is_admin: false,
                };
                if let Err(cancel) = self.engine.cancel(&owner, &session.id).await {
                    tracing::warn!(session = %session.id, "session without its hold not cancelled: {cancel}");
                }
                return Err(e.into());
            }
        }
        self.store
            .attach_payment(
                &session.id,
                &SessionPayment {
                    wallet_address: Some(request.wallet_address.clone()),
                    chain: Some(request.chain.clone()),
                    balance_check_id: Some(check.id.clone()),
                    payment_due: true,
                },
            )
            .await?;
        let session = self.store.session(&session.id).await?.unwrap_or(session);
        let check = self.store.balance_check(&check.id).await?.unwrap_or(check);
        Ok((session, check))
    }

    async fn tariff_of(&self, station_id: &str) -> anyhow::Result<(String, i64)> {
        Ok(match self.store.station(station_id).await? {
            Some(s) => (s.currency, s.price_micros),
            None => (
                self.config.default_currency.clone(),
                self.config.default_price_micros,
            ),
        })
    }

    /// Stops a session and, once it has ended, makes its payment link.
    pub async fn stop(
        &self,
        caller: &Caller,
        session_id: &str,
        final_cost: Option<i64>,
    ) -> Result<StopResult, PaymentError> {
        let session = self.engine.owned_session(caller, session_id).await?;
        let session = if session.status == SESSION_ACTIVE {
            match self.engine.end(caller, session_id, None, None).await? {
                (session, true) => {
                    return Ok(StopResult {
                        session,
                        link: None,
                        stopping: true,
                    })
                }
                (session, false) => session,
            }
        } else {
            session
        };
        let link = self.finalize(&session.id, final_cost).await?;
        let session = self.store.session(&session.id).await?.unwrap_or(session);
        Ok(StopResult {
            session,
            link,
            stopping: false,
        })
    }

    /// The payment step of an ended session, done once: release its hold,
    /// apply an admin's final cost, create its link. Returns the session's
    /// live (or paid) link.
    pub async fn finalize(
        &self,
        session_id: &str,
        cost_override: Option<i64>,
    ) -> Result<Option<PaymentLinkRecord>, PaymentError> {
        let Some(session) = self.store.session(session_id).await? else {
            return Err(EngineError::SessionNotFound.into());
        };
        if session.payment.payment_due && session.status != SESSION_ACTIVE {
            let cost = match session.status.as_str() {
                SESSION_CANCELLED => 0,
                _ => cost_override.unwrap_or(session.cost_minor),
            };
            let release = self.release_entries(&session).await?;
            let link = if cost > 0 {
                Some(
                    self.links
                        .create(&session, cost, &self.link_metadata(&session, cost))
                        .await?,
                )
            } else {
                None
            };
            let claimed = self
                .store
                .settle_session_payment(
                    &session.id,
                    release
                        .as_ref()
                        .map(|e| (session.id.as_str(), e.as_slice())),
                    cost_override,
                    link.as_ref(),
                )
                .await?;
            if !claimed {
                // Someone else did the step meanwhile; withdraw our link.
                if let Some(l) = &link {
                    self.links.withdraw(l).await;
                }
            } else if let Some(l) = &link {
                self.publish_link("payment.link_created", l);
            }
        }
        let links = self.store.payment_links_of_session(session_id).await?;
        Ok(links
            .into_iter()
            .rev()
            .find(|l| l.status == LINK_PENDING || l.status == LINK_PAID))
    }

    async fn release_entries(
        &self,
        session: &SessionRecord,
    ) -> anyhow::Result<Option<Vec<LedgerEntry>>> {
        let Some(check_id) = &session.payment.balance_check_id else {
            return Ok(None);
        };
        let Some(check) = self.store.balance_check(check_id).await? else {
            return Ok(None);
        };
        if check.provider != "ledger" || !self.config.ledger_reserve {
            return Ok(None);
        }
        Ok(Some(ledger::release(
            &check.user_id,
            &check.wallet_address,
            &check.currency,
            check.requested_amount_minor,
        )))
    }

    fn link_metadata(&self, session: &SessionRecord, cost: i64) -> Value {
        json!({
            "userId": session.user_id,
            "sessionId": session.id,
            "stationId": session.station_id,
            "stationName": session.station_name,
            "chargerId": session.charger_id,
            "transactionId": session.transaction_id,
            "energyDelivered": crate::engine::view::num(crate::engine::calc::round_to(session.energy_wh / 1000.0, 3)),
            "amount": major_json(cost, &session.currency),
            "currency": session.currency,
            "startTime": format_ms(session.start_time),
            "endTime": session.end_time.map(format_ms),
        })
    }

    /// Expires a session's expired or failed link and makes a new one for
    /// the same amount; a session never has two live links.
    pub async fn recreate(
        &self,
        caller: &Caller,
        link_id: &str,
    ) -> Result<PaymentLinkRecord, PaymentError> {
        let old = self
            .store
            .payment_link(link_id)
            .await?
            .ok_or(PaymentError::LinkNotFound)?;
        if old.user_id != caller.user_id && !caller.is_admin {
            return Err(EngineError::NotOwner.into());
        }
        let links = self.store.payment_links_of_session(&old.session_id).await?;
        if links.iter().any(|l| l.status == LINK_PAID) {
            return Err(PaymentError::Conflict(
                "This session is paid already".into(),
            ));
        }
        if links
            .iter()
            .any(|l| l.id != old.id && l.status == LINK_PENDING)
        {
            return Err(PaymentError::Conflict(
                "This session has a newer live payment link".into(),
            ));
        }
        let session = self
            .store
            .session(&old.session_id)
            .await?
            .ok_or(EngineError::SessionNotFound)?;
        if old.status == LINK_PENDING {
            self.links.withdraw(&old).await;
        }
        let link = self
            .links
            .create(&session, old.amount_minor, &old.metadata)
            .await?;
        self.store.create_payment_link(&link, Some(&old.id)).await?;
        self.publish_link("payment.link_created", &link);
        Ok(link)
    }

    /// Pays a local link from the owner's prepaid wallet.
    pub async fn pay_from_wallet(&self, link_id: &str) -> Result<PaymentLinkRecord, PaymentError> {
        let link = self
            .store
            .payment_link(link_id)
            .await?
            .ok_or(PaymentError::LinkNotFound)?;
        if link.provider != "local" {
            return Err(PaymentError::Conflict(
                "This link is paid through its provider's page".into(),
            ));
        }
        if link.status != LINK_PENDING {
            return Err(PaymentError::Conflict(format!(
                "This payment link is {}",
                link.status
            )));
        }
        if link.expires_at <= Utc::now() {
            self.store
                .set_link_status(&link.id, LINK_EXPIRED, now_ms())
                .await?;
            return Err(PaymentError::Conflict(
                "This payment link has expired".into(),
            ));
        }
        let session = self
            .store
            .session(&link.session_id)
            .await?
            .ok_or(EngineError::SessionNotFound)?;
        let wallet = session
            .payment
            .wallet_address
            .clone()
            .unwrap_or_else(|| ledger::DEFAULT_WALLET.into());
        // Whether the wallet covers the amount is decided inside the
        // transaction that marks the link paid and posts the settlement: a
        // wallet that cannot (another link paid at the same moment, say)
        // fails it with nothing taken, and this link stays pending.
        let entries = ledger::settle(&link.user_id, &wallet, &link.currency, link.amount_minor);
        if !self
            .store
            .pay_link_from_ledger(&link.id, &link.session_id, &entries, now_ms())
            .await?
        {
            return Err(PaymentError::Conflict(
                "This payment link is no longer pending".into(),
            ));
        }
        let paid = self.store.payment_link(&link.id).await?.unwrap_or(link);
        self.publish_link("payment.paid", &paid);
        Ok(paid)
    }

    /// Tells listeners about a payment link (after its commit).
    fn publish_link(&self, name: &'static str, link: &PaymentLinkRecord) {
        self.engine
            .events()
            .publish(name, Some(link.user_id.clone()), link_json(link));
    }

    /// Verifies and applies a Stripe webhook. Ok(false) for a replayed event.
    pub async fn stripe_webhook(
        &self,
        raw_body: &[u8],
        signature: &str,
    ) -> Result<bool, PaymentError> {
        let secret = self
            .config
            .stripe_webhook_secret
            .as_deref()
            .ok_or_else(|| PaymentError::Provider("Stripe webhooks are not configured".into()))?;
        let event = super::stripe::verify_webhook(
            raw_body,
            signature,
            secret,
            Utc::now().timestamp(),
            super::stripe::DEFAULT_WEBHOOK_TOLERANCE_SECS,
        )
        .map_err(|e| PaymentError::Provider(e.to_string()))?;
        if !self
            .store
            .record_stripe_event(&event.id, &event.kind)
            .await?
        {
            tracing::info!(event = %event.id, "Stripe event seen before: ignored");
            return Ok(false);
        }
        let Some(reference) = event.object_id.as_deref() else {
            return Ok(true);
        };
        let Some(link) = self.store.payment_link_by_ref(reference).await? else {
            tracing::warn!(event = %event.id, reference, "Stripe event for no known link");
            return Ok(true);
        };
        let paid = event.object.get("payment_status").and_then(Value::as_str) == Some("paid");
        let new_status = match event.kind.as_str() {
            "checkout.session.completed" if paid => Some(LINK_PAID),
            "checkout.session.async_payment_succeeded" => Some(LINK_PAID),
            "checkout.session.async_payment_failed" => Some(LINK_FAILED),
            "checkout.session.expired" => Some(LINK_EXPIRED),
            _ => None,
        };
        if let Some(status) = new_status {
            let changed = self
                .store
                .set_link_status(&link.id, status, now_ms())
                .await?;
            tracing::info!(link = %link.id, status, changed, "Stripe webhook applied");
            if changed && status == LINK_PAID {
                if let Some(paid) = self.store.payment_link(&link.id).await? {
                    self.publish_link("payment.paid", &paid);
                }
            }
        }
        Ok(true)
    }

    /// Credits a driver's prepaid wallet (an operator's top-up).
    pub async fn credit(
        &self,
        user_id: &str,
        wallet_address: &str,
        currency: &str,
        amount_minor: i64,
    ) -> anyhow::Result<i64> {
        let reference = uuid::Uuid::new_v4().to_string();
        self.store
            .ledger_post(
                "credit",
                &reference,
                "operator credit",
                &ledger::credit(user_id, wallet_address, currency, amount_minor),
            )
            .await?;
        self.store
            .ledger_balance(&ledger::wallet_account(user_id, wallet_address), currency)
            .await
    }

    /// Finishes the payment step of sessions that ended without anyone
    /// waiting (a StopTransaction that came late), and expires links past
    /// their time. Runs for the life of the server.
    pub async fn sweep(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            // Once per cluster: on the node holding the lease.
            if !self.engine.cluster().lease("payments", every).await {
                continue;
            }
            // A stop request that is still waiting for its StopTransaction
            // does the payment step itself (with an admin's finalCost, if
            // any); the sweeper leaves a session that just ended to it.
            let grace = chrono::Duration::from_std(self.config.stop_wait + Duration::from_secs(2))
                .unwrap_or_default();
            // Only sessions unchanged for the grace period are read.
            match self
                .store
                .sessions_with_payment_due(Utc::now() - grace)
                .await
            {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = self.finalize(&id, None).await {
                            tracing::warn!(session = %id, "payment step failed, will retry: {e}");
                        }
                    }
                }
                Err(e) => tracing::warn!("payment sweep: {e:#}"),
            }
            let now = Utc::now();
            if let Ok(links) = self.store.pending_links_expired_by(now).await {
                for link in links {
                    let _ = self
                        .store
                        .set_link_status(&link.id, LINK_EXPIRED, now_ms())
                        .await;
                }
            }
        }
    }
}

pub fn balance_check_json(c: &BalanceCheckRecord) -> Value {
    json!({
        "id": c.id,
        "userId": c.user_id,
        "walletAddress": c.wallet_address,
        "chain": c.chain,
        "requestedAmount": major_json(c.requested_amount_minor, &c.currency),
        "actualBalance": c.actual_balance_minor.map(|b| major_json(b, &c.currency)),
        "currency": c.currency,
        "status": c.status,
        "provider": c.provider,
        "errorMessage": c.error_message,
        "metadata": c.metadata,
        "sessionId": c.session_id,
        "createdAt": format_ms(c.created_at),
        "updatedAt": format_ms(c.updated_at),
    })
}

pub fn link_json(l: &PaymentLinkRecord) -> Value {
    json!({
        "id": l.id,
        "sessionId": l.session_id,
        "userId": l.user_id,
        "provider": l.provider,
        "url": l.url,
        "amount": major_json(l.amount_minor, &l.currency),
        "currency": l.currency,
        "status": l.status,
        "metadata": l.metadata,
        "expiresAt": format_ms(l.expires_at),
        "paidAt": l.paid_at.map(format_ms),
        "createdAt": format_ms(l.created_at),
        "updatedAt": format_ms(l.updated_at),
    })
}
