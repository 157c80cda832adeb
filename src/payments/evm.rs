//! EVM balance provider: how much a wallet on an Ethereum-compatible chain is
//! worth, in minor units of a fiat currency, read from a JSON-RPC node.
//!
//! It implements the two read calls of the Ethereum JSON-RPC API it needs:
//!
//! - native coin: `eth_getBalance [address, "latest"]`, which answers a
//!   QUANTITY (`"0x1bc16d674ec80000"`, wei);
//! - ERC-20 token: `eth_call [{to: contract, data}, "latest"]` with `data` =
//!   the `balanceOf(address)` selector `0x70a08231` followed by the address
//!   left-padded to 32 bytes, which answers the ABI-encoded `uint256` as DATA
//!   (`"0x"` + 64 hex digits).
//!
//! The raw amount is converted with the configured rate by exact integer
//! arithmetic ([`super::decimal::scale_to_minor`]), rounding down, so a
//! balance is never overstated. Errors are worded to be shown as a balance
//! check's `errorMessage`; they never contain the RPC URL, which for hosted
//! nodes often carries an API key.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use sha3::{Digest, Keccak256};

use super::decimal::{parse_hex, scale_to_minor, BigUint, Decimal, DecimalError};

/// `balanceOf(address)`: the first four bytes of keccak256("balanceOf(address)").
const BALANCE_OF_SELECTOR: &str = "70a08231";

/// A `uint256` has 78 decimal digits; more decimals than that would make every
/// possible balance round to nothing.
const MAX_TOKEN_DECIMALS: u32 = 77;

/// No ISO 4217 currency has more than 4 minor digits; 18 leaves room for
/// anything unusual while keeping the arithmetic cheap.
const MAX_CURRENCY_MINOR_DIGITS: u32 = 18;

/// How to read balances: which node, which asset, and what one unit is worth.
#[derive(Clone)]
pub struct EvmConfig {
    /// The JSON-RPC endpoint (`http://` or `https://`).
    pub rpc_url: String,
    /// The ERC-20 contract address; `None` reads the chain's native coin.
    pub token_contract: Option<String>,
    /// The asset's decimals: 18 for ether, the token's `decimals()` otherwise
    /// (6 for USDC).
    pub decimals: u32,
    /// How many major units of the fiat currency one whole token is worth,
    /// as a plain decimal (`"2500.50"`).
    pub rate: String,
    /// Limit for one whole JSON-RPC exchange, connecting included.
    pub timeout: Duration,
}

// Written by hand rather than derived: hosted RPC URLs embed an API key in the
// path or query, and configs end up in logs.
impl fmt::Debug for EvmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvmConfig")
            .field("rpc_url", &redact_url(&self.rpc_url))
            .field("token_contract", &self.token_contract)
            .field("decimals", &self.decimals)
            .field("rate", &self.rate)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Keeps the scheme, host and port of a URL and hides the rest.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() == "/" && u.query().is_none() {
                ""
            } else {
                "/…"
            };
            format!("{}://{host}{port}{rest}", u.scheme())
        }
        Err(_) => "(unparseable URL)".to_owned(),
    }
}

/// What is wrong with an [`EvmConfig`]; reported at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvmConfigError {
    #[error("EVM RPC URL must be an http:// or https:// URL")]
    InvalidRpcUrl,
    #[error("EVM token contract {address:?} is not an address: {reason}")]
    InvalidTokenContract {
        address: String,
        reason: AddressError,
    },
    #[error("EVM token decimals must be at most {MAX_TOKEN_DECIMALS}, found {0}")]
    InvalidDecimals(u32),
    #[error("EVM exchange rate {rate:?} {reason}")]
    InvalidRate { rate: String, reason: DecimalError },
    #[error("EVM exchange rate must be greater than zero")]
    ZeroRate,
    #[error("EVM RPC timeout must be greater than zero")]
    ZeroTimeout,
    #[error("could not build the HTTP client for the EVM RPC node: {0}")]
    Client(String),
}

/// A validated configuration: what [`EvmConfig::parse`] produces.
#[derive(Clone, Debug)]
struct ParsedConfig {
    rpc_url: reqwest::Url,
    token_contract: Option<EvmAddress>,
    decimals: u32,
    rate: Decimal,
    timeout: Duration,
}

impl EvmConfig {
    /// Checks every field, with a message naming the one that is wrong.
    pub fn validate(&self) -> Result<(), EvmConfigError> {
        self.parse().map(|_| ())
    }

    fn parse(&self) -> Result<ParsedConfig, EvmConfigError> {
        let rpc_url =
            reqwest::Url::parse(self.rpc_url.trim()).map_err(|_| EvmConfigError::InvalidRpcUrl)?;
        if !matches!(rpc_url.scheme(), "http" | "https") || rpc_url.host_str().is_none() {
            return Err(EvmConfigError::InvalidRpcUrl);
        }
        let token_contract = match &self.token_contract {
            Some(address) => Some(EvmAddress::parse(address).map_err(|reason| {
                EvmConfigError::InvalidTokenContract {
                    address: address.clone(),
                    reason,
                }
            })?),
            None => None,
        };
        if self.decimals > MAX_TOKEN_DECIMALS {
            return Err(EvmConfigError::InvalidDecimals(self.decimals));
        }
        let rate = Decimal::parse(&self.rate).map_err(|reason| EvmConfigError::InvalidRate {
            rate: self.rate.clone(),
            reason,
        })?;
        if rate.is_zero() {
            return Err(EvmConfigError::ZeroRate);
        }
        if self.timeout.is_zero() {
            return Err(EvmConfigError::ZeroTimeout);
        }
        Ok(ParsedConfig {
            rpc_url,
            token_contract,
            decimals: self.decimals,
            rate,
            timeout: self.timeout,
        })
    }
}

/// An EVM account address: `0x` and 40 hex digits, kept in lower case.
///
/// All lower-case or all upper-case digits carry no checksum and are taken
/// as they are; mixed case is an EIP-55 checksum and must be right, so a
/// mistyped address is refused instead of read for someone else's balance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EvmAddress(String);

/// Why a string is not an [`EvmAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("expected 0x followed by 40 hex digits, but it does not start with 0x")]
    MissingPrefix,
    #[error("expected 0x followed by 40 hex digits, found {0} characters after 0x")]
    WrongLength(usize),
    #[error("expected 0x followed by 40 hex digits, found the non-hex character {0:?}")]
    NonHex(char),
    #[error(
        "the mixed-case address does not match its EIP-55 checksum: check it for a typo, \
         or send it in all lower case"
    )]
    BadChecksum,
}

impl EvmAddress {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .ok_or(AddressError::MissingPrefix)?;
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(AddressError::NonHex(bad));
        }
        if digits.len() != 40 {
            return Err(AddressError::WrongLength(digits.len()));
        }
        let address = EvmAddress(format!("0x{}", digits.to_ascii_lowercase()));
        let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper && address.checksummed()[2..] != *digits {
            return Err(AddressError::BadChecksum);
        }
        Ok(address)
    }

    /// The EIP-55 form: a hex letter is upper case where the matching
    /// nibble of keccak256(lower-case hex digits) is 8 or more.
    pub fn checksummed(&self) -> String {
        let digits = self.hex_digits();
        let hash = Keccak256::digest(digits.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in digits.chars().enumerate() {
            let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
            out.push(if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }

    /// `0x` + 40 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 40 hex digits without `0x`.
    fn hex_digits(&self) -> &str {
        &self.0[2..]
    }
}

impl fmt::Display for EvmAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a balance could not be read. The `Display` text is meant for people
/// (it becomes a balance check's `errorMessage`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvmError {
    #[error("invalid wallet address {address:?}: {reason}")]
    InvalidAddress {
        address: String,
        reason: AddressError,
    },
    #[error(
        "currencies with {0} minor digits are not supported (at most {MAX_CURRENCY_MINOR_DIGITS})"
    )]
    UnsupportedCurrencyDigits(u32),
    #[error("the Ethereum RPC node could not be reached: {detail}")]
    Unreachable { detail: String },
    #[error("the Ethereum RPC node did not answer within {} ms", .after.as_millis())]
    Timeout { after: Duration },
    #[error("the Ethereum RPC node answered with HTTP status {status}")]
    HttpStatus { status: u16 },
    #[error("the Ethereum RPC node returned JSON-RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("the Ethereum RPC node's answer was malformed: {0}")]
    Malformed(String),
    #[error("the balance is too large to express in minor units")]
    Overflow,
}

impl EvmError {
    /// Whether asking again later might succeed (network trouble, an
    /// overloaded node), as opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            EvmError::Unreachable { .. } | EvmError::Timeout { .. } => true,
            EvmError::HttpStatus { status } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Reads wallet balances from one JSON-RPC node for one asset.
pub struct EvmBalanceProvider {
    http: reqwest::Client,
    config: ParsedConfig,
    next_id: AtomicU64,
}

impl fmt::Debug for EvmBalanceProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvmBalanceProvider")
            .field("rpc_url", &redact_url(self.config.rpc_url.as_str()))
            .field("token_contract", &self.config.token_contract)
            .finish_non_exhaustive()
    }
}

impl EvmBalanceProvider {
    pub fn new(config: EvmConfig) -> Result<Self, EvmConfigError> {
        let config = config.parse()?;
        // reqwest is built without a default TLS crypto provider (the app
        // picks one); installing ring here is a no-op if one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| EvmConfigError::Client(e.to_string()))?;
        Ok(EvmBalanceProvider {
            http,
            config,
            next_id: AtomicU64::new(1),
        })
    }

    /// The ERC-20 contract read, or `None` for the native coin.
    pub fn token_contract(&self) -> Option<&EvmAddress> {
        self.config.token_contract.as_ref()
    }

    /// The wallet's balance in integer minor units of the fiat currency
    /// (`currency_minor_digits` = 2 for cents/kobo, 0 for yen), rounded down.
    pub async fn balance_minor(
        &self,
        wallet_address: &str,
        currency_minor_digits: u32,
    ) -> Result<i128, EvmError> {
        if currency_minor_digits > MAX_CURRENCY_MINOR_DIGITS {
            return Err(EvmError::UnsupportedCurrencyDigits(currency_minor_digits));
        }
        let raw = self.balance_raw(wallet_address).await?;
        scale_to_minor(
            &raw,
            self.config.decimals,
            &self.config.rate,
            currency_minor_digits,
        )
        .ok_or(EvmError::Overflow)
    }

    /// The wallet's balance in the asset's smallest unit (wei, or the token's
    /// base unit), as the node reports it.
    pub async fn balance_raw(&self, wallet_address: &str) -> Result<BigUint, EvmError> {
        let wallet =
            EvmAddress::parse(wallet_address).map_err(|reason| EvmError::InvalidAddress {
                address: wallet_address.to_owned(),
                reason,
            })?;
        match &self.config.token_contract {
            None => {
                let result = self
                    .call("eth_getBalance", json!([wallet.as_str(), "latest"]))
                    .await?;
                parse_quantity(&result)
            }
            Some(contract) => {
                let data = format!("0x{BALANCE_OF_SELECTOR}{:0>64}", wallet.hex_digits());
                let result = self
                    .call(
                        "eth_call",
                        json!([{"to": contract.as_str(), "data": data}, "latest"]),
                    )
                    .await?;
                parse_uint256_data(&result, contract)
            }
        }
    }

    /// One JSON-RPC 2.0 exchange; returns the `result` string.
    async fn call(&self, method: &str, params: Value) -> Result<String, EvmError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self
            .http
            .post(self.config.rpc_url.clone())
            .json(&request)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;

        let answer: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            // An error page from a proxy in front of the node says more by
            // its status than by its body.
            Err(_) if !status.is_success() => {
                return Err(EvmError::HttpStatus {
                    status: status.as_u16(),
                })
            }
            Err(_) => {
                return Err(EvmError::Malformed(format!(
                    "the answer is not JSON: {}",
                    excerpt(&body)
                )))
            }
        };
        // Nodes often answer a JSON-RPC error with a 4xx/5xx status; the
        // error object is the more useful of the two, so it is looked at first.
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Err(EvmError::Rpc {
                code,
                message: truncate(message, 200),
            });
        }
        if !status.is_success() {
            return Err(EvmError::HttpStatus {
                status: status.as_u16(),
            });
        }
        match answer.get("result") {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(EvmError::Malformed(
                "the answer has neither a result nor an error".to_owned(),
            )),
            Some(_) => Err(EvmError::Malformed(
                "the result is not a hex string".to_owned(),
            )),
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> EvmError {
        if e.is_timeout() {
            return EvmError::Timeout {
                after: self.config.timeout,
            };
        }
        // reqwest's own text is generic ("error sending request"); the cause
        // chain says what happened ("Connection refused"). The URL is left
        // out on purpose (see the module docs).
        let e = e.without_url();
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        EvmError::Unreachable { detail }
    }
}

/// A QUANTITY: `0x` + 1 to 64 hex digits (no leading zeros required).
fn parse_quantity(s: &str) -> Result<BigUint, EvmError> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.len() > 64 {
        return Err(EvmError::Malformed(format!(
            "the balance has {} hex digits; a uint256 has at most 64",
            digits.len()
        )));
    }
    parse_hex(s)
        .map_err(|e| EvmError::Malformed(format!("the balance {} {e}", excerpt(s.as_bytes()))))
}

/// `balanceOf`'s return DATA: exactly one ABI-encoded uint256, 32 bytes.
fn parse_uint256_data(s: &str, contract: &EvmAddress) -> Result<BigUint, EvmError> {
    let Some(digits) = s.strip_prefix("0x") else {
        return Err(EvmError::Malformed(format!(
            "the token balance {} is not 0x-prefixed hex",
            excerpt(s.as_bytes())
        )));
    };
    if digits.is_empty() {
        // What a call to an address without code returns.
        return Err(EvmError::Malformed(format!(
            "the token contract {contract} returned no data; is it an ERC-20 contract on this chain?"
        )));
    }
    if digits.len() != 64 {
        return Err(EvmError::Malformed(format!(
            "balanceOf returned {} hex digits; a uint256 is 64",
            digits.len()
        )));
    }
    parse_hex(s).map_err(|e| EvmError::Malformed(format!("the token balance {e}")))
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    format!("{:?}", truncate(text.trim(), 80))
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EvmConfig {
        EvmConfig {
            rpc_url: "https://rpc.example/v3/secret-key".to_owned(),
            token_contract: None,
            decimals: 18,
            rate: "2000".to_owned(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn addresses_are_0x_and_40_hex_digits() {
        let a = EvmAddress::parse("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266").unwrap();
        assert_eq!(a.as_str(), "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266");
        assert_eq!(
            EvmAddress::parse("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            Err(AddressError::MissingPrefix)
        );
        assert_eq!(
            EvmAddress::parse("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb9226"),
            Err(AddressError::WrongLength(39))
        );
        assert_eq!(
            EvmAddress::parse("0xz39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            Err(AddressError::NonHex('z'))
        );
    }

    #[test]
    fn mixed_case_addresses_must_carry_a_right_eip55_checksum() {
        // The examples of EIP-55 itself.
        for good in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a = EvmAddress::parse(good).unwrap();
            assert_eq!(a.as_str(), good.to_ascii_lowercase());
            assert_eq!(a.checksummed(), good);
        }
        // No checksum to check: one case throughout.
        for plain in [
            "0x52908400098527886E0F7030069857D2E4169EE7",
            "0xde709f2102306220921060314715629080e2fb77",
            "0X27B1FDB04752BBC536007A920D24ACB045561C26",
        ] {
            assert!(EvmAddress::parse(plain).is_ok(), "{plain}");
        }
        // One letter's case flipped.
        assert_eq!(
            EvmAddress::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
            Err(AddressError::BadChecksum)
        );
        assert_eq!(
            EvmAddress::parse("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            Err(AddressError::BadChecksum)
        );
        assert!(AddressError::BadChecksum.to_string().contains("EIP-55"));
    }

    #[test]
    fn config_validation_names_the_bad_field() {
        assert_eq!(config().validate(), Ok(()));
        let bad_rate = EvmConfig {
            rate: "2,500".into(),
            ..config()
        };
        let err = bad_rate.validate().unwrap_err();
        assert!(err.to_string().contains("exchange rate \"2,500\""), "{err}");
        assert_eq!(
            EvmConfig {
                rate: "0.00".into(),
                ..config()
            }
            .validate(),
            Err(EvmConfigError::ZeroRate)
        );
        let bad_token = EvmConfig {
            token_contract: Some("0x1234".into()),
            ..config()
        };
        assert!(matches!(
            bad_token.validate(),
            Err(EvmConfigError::InvalidTokenContract { .. })
        ));
        assert_eq!(
            EvmConfig {
                rpc_url: "ws://localhost:8545".into(),
                ..config()
            }
            .validate(),
            Err(EvmConfigError::InvalidRpcUrl)
        );
        assert_eq!(
            EvmConfig {
                decimals: 78,
                ..config()
            }
            .validate(),
            Err(EvmConfigError::InvalidDecimals(78))
        );
        assert_eq!(
            EvmConfig {
                timeout: Duration::ZERO,
                ..config()
            }
            .validate(),
            Err(EvmConfigError::ZeroTimeout)
        );
    }

    #[test]
    fn debug_output_hides_the_rpc_url_path() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("secret-key"), "{shown}");
        assert!(shown.contains("https://rpc.example/…"), "{shown}");
    }

    #[test]
    fn results_are_checked_for_shape() {
        assert_eq!(parse_quantity("0x0").unwrap(), BigUint::from(0u32));
        assert!(matches!(parse_quantity("12"), Err(EvmError::Malformed(_))));
        assert!(matches!(
            parse_quantity("0xzz"),
            Err(EvmError::Malformed(_))
        ));
        assert!(matches!(
            parse_quantity(&format!("0x1{}", "0".repeat(64))),
            Err(EvmError::Malformed(_))
        ));
        let contract = EvmAddress::parse(&format!("0x{}", "a".repeat(40))).unwrap();
        let word = format!("0x{:064x}", 42);
        assert_eq!(
            parse_uint256_data(&word, &contract).unwrap(),
            BigUint::from(42u32)
        );
        let err = parse_uint256_data("0x", &contract).unwrap_err();
        assert!(err.to_string().contains("returned no data"), "{err}");
        assert!(matches!(
            parse_uint256_data("0x2a", &contract),
            Err(EvmError::Malformed(_))
        ));
    }
}
