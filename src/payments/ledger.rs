//! The prepaid wallet ledger: double entry, every movement sums to zero.
//!
//! Accounts: `wallet:{user}:{address}` (what a driver may spend),
//! `hold:{user}:{address}` (held while a session runs), `funding` (where
//! operators' credits come from) and `revenue` (what sessions paid).
//!
//! A wallet never goes below zero: the store refuses a movement that would
//! take one there with [`Overdraft`], deciding inside the transaction that
//! posts it, so concurrent settlements cannot spend the same money twice.

use crate::store::LedgerEntry;

/// The wallet an operator's credit goes to when no address is given.
pub const DEFAULT_WALLET: &str = "default";

const WALLET_PREFIX: &str = "wallet:";

/// A driver's spendable account, the kind that never goes below zero.
pub fn is_wallet_account(account: &str) -> bool {
    account.starts_with(WALLET_PREFIX)
}

/// A movement refused because it would take a wallet below zero; nothing of
/// it was posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{account} holds {balance_minor} minor units of {currency}, {debit_minor} needed")]
pub struct Overdraft {
    pub account: String,
    pub currency: String,
    /// The wallet's balance before the movement.
    pub balance_minor: i64,
    pub debit_minor: i64,
}

fn normalise(address: &str) -> String {
    address.trim().to_lowercase()
}

pub fn wallet_account(user_id: &str, address: &str) -> String {
    format!("{WALLET_PREFIX}{user_id}:{}", normalise(address))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wallets_are_kept_from_going_below_zero() {
        assert!(is_wallet_account(&wallet_account("u", "0xAB")));
        assert!(!is_wallet_account(&hold_account("u", "0xAB")));
        assert!(!is_wallet_account("funding"));
        assert!(!is_wallet_account("revenue"));
    }

    #[test]
    fn every_movement_balances() {
        for entries in [
            credit("u", "a", "NGN", 5),
            hold("u", "a", "NGN", 5),
            release("u", "a", "NGN", 5),
            settle("u", "a", "NGN", 5),
        ] {
            assert_eq!(entries.iter().map(|e| e.amount_minor).sum::<i64>(), 0);
        }
        // A settlement debits the wallet.
        let s = settle("u", "0xAB", "NGN", 693);
        assert_eq!(
            (s[0].account.as_str(), s[0].amount_minor),
            ("wallet:u:0xab", -693)
        );
    }
}
