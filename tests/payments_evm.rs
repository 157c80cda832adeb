//! The EVM balance provider against a real local Ethereum node (anvil), and
//! against small HTTP servers that misbehave in the ways real nodes and the
//! proxies in front of them do.

#[path = "payments_support/anvil.rs"]
mod anvil;
#[path = "common/require.rs"]
mod require;

use std::time::{Duration, Instant};

use anvil::{Anvil, DEV_ACCOUNT_0};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use csms::payments::evm::{EvmBalanceProvider, EvmConfig, EvmError};

const ETH: u128 = 1_000_000_000_000_000_000;

fn native(url: &str, rate: &str) -> EvmBalanceProvider {
    EvmBalanceProvider::new(EvmConfig {
        rpc_url: url.to_owned(),
        token_contract: None,
        decimals: 18,
        rate: rate.to_owned(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn token(url: &str, contract: &str, decimals: u32, rate: &str) -> EvmBalanceProvider {
    EvmBalanceProvider::new(EvmConfig {
        rpc_url: url.to_owned(),
        token_contract: Some(contract.to_owned()),
        decimals,
        rate: rate.to_owned(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

/// A fresh address nobody has touched: random, so tests never share state.
fn random_address() -> String {
    format!("0x{}", &uuid::Uuid::new_v4().simple().to_string()[..32]) + "c0ffee00"
}

/// Runtime bytecode of the smallest contract that answers ERC-20
/// `balanceOf(address)`, hand-assembled so the test needs no compiler:
///
/// ```text
/// 00 PUSH1 0 CALLDATALOAD PUSH1 0xe0 SHR   selector = calldata[0..4]
/// 06 PUSH4 0x70a08231 EQ PUSH1 0x13 JUMPI  if balanceOf, jump to 0x13
/// 0f PUSH1 0 DUP1 REVERT                   anything else reverts
/// 13 JUMPDEST PUSH1 4 CALLDATALOAD SLOAD   balance = storage[holder]
/// 18 PUSH1 0 MSTORE PUSH1 0x20 PUSH1 0 RETURN   return it as one uint256
/// ```
///
/// Unlike Solidity's mapping layout (slot = keccak256(holder . index)), the
/// storage slot is the holder's address itself, so the test can set a
/// balance with `anvil_setStorageAt` without computing a hash. The provider
/// sees exactly what it would see from a real token: the same call data in,
/// one ABI-encoded uint256 out.
const BALANCE_OF_TOKEN: &str = "0x60003560e01c6370a0823114601357600080fd5b6004355460005260206000f3";

/// A contract whose every call reverts.
const ALWAYS_REVERTS: &str = "0x600080fd";

fn slot_of(holder: &str) -> String {
    format!("0x{:0>64}", holder.trim_start_matches("0x").to_lowercase())
}

#[tokio::test]
async fn the_funded_dev_account_is_worth_its_ether_at_the_configured_rate() {
    let Some(node) = Anvil::start().await else {
        return;
    };
    let provider = native(node.url(), "2500.50");

    // 10 000 ETH × 2500.50 = 25 005 000.00 → 2 500 500 000 minor units.
    let minor = provider.balance_minor(DEV_ACCOUNT_0, 2).await.unwrap();
    assert_eq!(minor, 2_500_500_000);
    // Lower-case addresses are the same account.
    let minor = provider
        .balance_minor(&DEV_ACCOUNT_0.to_lowercase(), 0)
        .await
        .unwrap();
    assert_eq!(minor, 25_005_000);
}

#[tokio::test]
async fn a_fresh_address_has_a_zero_balance() {
    let Some(node) = Anvil::start().await else {
        return;
    };
    let provider = native(node.url(), "2500.50");
    assert_eq!(provider.balance_minor(&random_address(), 2).await, Ok(0));
}

#[tokio::test]
async fn a_native_balance_is_rounded_down_never_up() {
    let Some(node) = Anvil::start().await else {
        return;
    };
    let wallet = random_address();
    // One wei short of 2 ETH.
    node.set_balance(&wallet, 2 * ETH - 1).await;

    assert_eq!(
        native(node.url(), "1").balance_minor(&wallet, 2).await,
        Ok(199)
    );
    // 1.999… ETH at 2000 = 3999.99…: 399 999 cents, not 400 000.
    assert_eq!(
        native(node.url(), "2000").balance_minor(&wallet, 2).await,
        Ok(399_999)
    );
    let raw = native(node.url(), "1").balance_raw(&wallet).await.unwrap();
    assert_eq!(u128::try_from(&raw).ok(), Some(2 * ETH - 1));
}

#[tokio::test]
async fn an_erc20_balance_is_read_through_balance_of() {
    let Some(node) = Anvil::start().await else {
        return;
    };
    let contract = random_address();
    node.set_code(&contract, BALANCE_OF_TOKEN).await;
    let holder = random_address();
    // 123.456789 tokens with 6 decimals.
    node.set_storage(
        &contract,
        &slot_of(&holder),
        &format!("0x{:064x}", 123_456_789u64),
    )
    .await;

    // At 1 per token: 123.456789 → 12 345 cents (rounded down).
    let usd = token(node.url(), &contract, 6, "1");
    assert_eq!(usd.balance_minor(&holder, 2).await, Ok(12_345));
    // At 1550.25 per token: 191 388.887… → 19 138 888 kobo.
    let ngn = token(node.url(), &contract, 6, "1550.25");
    assert_eq!(ngn.balance_minor(&holder, 2).await, Ok(19_138_888));
    // Someone holding none of it.
    assert_eq!(usd.balance_minor(&random_address(), 2).await, Ok(0));
    // The native balance of the same holder is a different thing: zero.
    assert_eq!(
        native(node.url(), "1").balance_minor(&holder, 2).await,
        Ok(0)
    );
}

#[tokio::test]
async fn a_token_address_without_code_is_reported_as_malformed() {
    let Some(node) = Anvil::start().await else {
        return;
    };
    let provider = token(node.url(), &random_address(), 6, "1");
    let err = provider.balance_minor(DEV_ACCOUNT_0, 2).await.unwrap_err();
    assert!(matches!(err, EvmError::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("returned no data"), "{err}");
}

#[tokio::test]
async fn a_reverting_token_contract_gives_the_node_s_json_rpc_error() {
    let Some(node) = Anvil::start().await else {
        return;
    };
    let contract = random_address();
    node.set_code(&contract, ALWAYS_REVERTS).await;
    let err = token(node.url(), &contract, 6, "1")
        .balance_minor(DEV_ACCOUNT_0, 2)
        .await
        .unwrap_err();
    match &err {
        EvmError::Rpc { message, .. } => assert!(message.contains("revert"), "{err}"),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_invalid_wallet_address_is_rejected_before_asking_the_node() {
    // Nothing listens here; an invalid address must not even get that far.
    let provider = native(&format!("http://127.0.0.1:{}", unused_port()), "1");
    for bad in [
        "",
        "0x1234",
        "f39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0xg39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    ] {
        let err = provider.balance_minor(bad, 2).await.unwrap_err();
        assert!(
            matches!(err, EvmError::InvalidAddress { .. }),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains("40 hex digits"), "{err}");
    }
}

#[tokio::test]
async fn a_node_that_is_down_is_reported_unreachable_quickly() {
    let provider = native(&format!("http://127.0.0.1:{}", unused_port()), "1");
    let started = Instant::now();
    let err = provider.balance_minor(DEV_ACCOUNT_0, 2).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, EvmError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(!err.to_string().contains("127.0.0.1"), "URL leaked: {err}");
}

#[tokio::test]
async fn a_node_that_never_answers_times_out_at_the_configured_limit() {
    // Accepts connections and reads, but never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let provider = EvmBalanceProvider::new(EvmConfig {
        rpc_url: url,
        token_contract: None,
        decimals: 18,
        rate: "1".into(),
        timeout: Duration::from_millis(400),
    })
    .unwrap();
    let started = Instant::now();
    let err = provider.balance_minor(DEV_ACCOUNT_0, 2).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        err,
        EvmError::Timeout {
            after: Duration::from_millis(400)
        }
    );
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(
        err.to_string(),
        "the Ethereum RPC node did not answer within 400 ms"
    );
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_malformed() {
    let url = serve_fixed(StatusCode::OK, "text/plain", "hello, I am not a node").await;
    let err = native(&url, "1")
        .balance_minor(DEV_ACCOUNT_0, 2)
        .await
        .unwrap_err();
    assert!(matches!(err, EvmError::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[tokio::test]
async fn a_json_rpc_error_object_is_reported_with_its_code_and_message() {
    let url = serve_fixed(
        StatusCode::OK,
        "application/json",
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"daily request limit exceeded"}}"#,
    )
    .await;
    let err = native(&url, "1")
        .balance_minor(DEV_ACCOUNT_0, 2)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EvmError::Rpc {
            code: -32005,
            message: "daily request limit exceeded".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "the Ethereum RPC node returned JSON-RPC error -32005: daily request limit exceeded"
    );
}

#[tokio::test]
async fn answers_with_the_wrong_shape_are_malformed() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":12345}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":"12345"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":"0xnothex"}"#,
        r#"[{"jsonrpc":"2.0","id":1,"result":"0x1"}]"#,
    ] {
        let url = serve_fixed(StatusCode::OK, "application/json", body).await;
        let err = native(&url, "1")
            .balance_minor(DEV_ACCOUNT_0, 2)
            .await
            .unwrap_err();
        assert!(matches!(err, EvmError::Malformed(_)), "{body}: {err:?}");
    }
    // A token balance must be exactly one 32-byte word.
    let url = serve_fixed(
        StatusCode::OK,
        "application/json",
        r#"{"jsonrpc":"2.0","id":1,"result":"0x2a"}"#,
    )
    .await;
    let err = token(&url, &random_address(), 6, "1")
        .balance_minor(DEV_ACCOUNT_0, 2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("64"), "{err}");
}

#[tokio::test]
async fn an_error_page_from_a_proxy_is_reported_by_its_status() {
    let url = serve_fixed(
        StatusCode::BAD_GATEWAY,
        "text/html",
        "<html>502 Bad Gateway</html>",
    )
    .await;
    let err = native(&url, "1")
        .balance_minor(DEV_ACCOUNT_0, 2)
        .await
        .unwrap_err();
    assert_eq!(err, EvmError::HttpStatus { status: 502 });
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_balance_too_large_for_minor_units_is_an_overflow() {
    // The largest uint256 in wei at a rate of 10^9 does not fit an i128.
    let max = format!("0x{}", "f".repeat(64));
    let url = serve_fixed(
        StatusCode::OK,
        "application/json",
        Box::leak(format!(r#"{{"jsonrpc":"2.0","id":1,"result":"{max}"}}"#).into_boxed_str()),
    )
    .await;
    let err = native(&url, "1000000000")
        .balance_minor(DEV_ACCOUNT_0, 2)
        .await
        .unwrap_err();
    assert_eq!(err, EvmError::Overflow);
}

/// A port nothing listens on: bound, then released.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP server on a free port that answers every request the same way.
async fn serve_fixed(status: StatusCode, content_type: &'static str, body: &'static str) -> String {
    let app = axum::Router::new().fallback(move || async move {
        (
            status,
            [(axum::http::header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
