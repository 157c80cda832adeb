//! The prepaid wallet ledger: double entry, every movement sums to zero.
//!
//! Accounts: `wallet:{user}:{address}` (what a driver may spend),
//! `hold:{user}:{address}` (held while a session runs), `funding` (where
//! operators' credits come from) and `revenue` (what sessions paid).

use crate::store::LedgerEntry;

/// The wallet an operator's credit goes to when no address is given.
pub const DEFAULT_WALLET: &str = "default";

fn normalise(address: &str) -> String {
    address.trim().to_lowercase()
}

pub fn wallet_account(user_id: &str, address: &str) -> String {
    format!("wallet:{user_id}:{}", normalise(address))
}

pub fn hold_account(user_id: &str, address: &str) -> String {
    format!("hold:{user_id}:{}", normalise(address))
}

fn pair(from: String, to: String, currency: &str, amount: i64) -> Vec<LedgerEntry> {
    vec![
        LedgerEntry {
            account: from,
            currency: currency.to_owned(),
            amount_minor: -amount,
        },
        LedgerEntry {
            account: to,
            currency: currency.to_owned(),
            amount_minor: amount,
        },
    ]
}

pub fn credit(user_id: &str, address: &str, currency: &str, amount: i64) -> Vec<LedgerEntry> {
    pair(
        "funding".into(),
        wallet_account(user_id, address),
        currency,
        amount,
    )
}

pub fn hold(user_id: &str, address: &str, currency: &str, amount: i64) -> Vec<LedgerEntry> {
    pair(
        wallet_account(user_id, address),
        hold_account(user_id, address),
        currency,
        amount,
    )
}

pub fn release(user_id: &str, address: &str, currency: &str, amount: i64) -> Vec<LedgerEntry> {
    pair(
        hold_account(user_id, address),
        wallet_account(user_id, address),
        currency,
        amount,
    )
}

pub fn settle(user_id: &str, address: &str, currency: &str, amount: i64) -> Vec<LedgerEntry> {
    pair(
        wallet_account(user_id, address),
        "revenue".into(),
        currency,
        amount,
    )
}
