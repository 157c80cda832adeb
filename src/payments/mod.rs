//! Payments: balance providers (checked before a session starts) and
//! payment-link providers (a link for the final amount after it ends).

pub mod decimal;
pub mod evm;
pub mod ledger;
pub mod links;
pub mod service;
pub mod stripe;

pub use service::Payments;
