//! Test support: a real local Ethereum node (Foundry's `anvil`) on a free
//! port, killed when dropped.
//!
//! Use from a test file with
//! `#[path = "payments_support/anvil.rs"] mod anvil;` (beside `mod common;`
//! or `#[path = "common/require.rs"] mod require;`) and
//! `let Some(node) = anvil::Anvil::start().await else { return };`.
//!
//! Where the binary comes from, in order:
//! 1. `CSMS_TEST_ANVIL`: a path to the binary (a wrong path fails the test);
//! 2. `anvil` on `PATH`;
//! 3. the npm package `@foundry-rs/anvil` installed under the repository
//!    root (`npm install --no-save @foundry-rs/anvil`): the platform package's
//!    real binary if present, else `node_modules/.bin/anvil`.
//!
//! Without any of them the test fails under CI and elsewhere prints
//! `SKIPPED (anvil): …` to stderr and returns early (`common/require.rs`).
#![allow(dead_code)]

// The including test crate provides `require` (`common/require.rs`), through
// `mod common` or on its own.
use crate::require;

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Anvil's first dev account, funded with 10 000 ETH at genesis.
pub const DEV_ACCOUNT_0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

pub struct Anvil {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Anvil {
    /// Starts anvil on a free port and waits until it answers `eth_chainId`.
    /// `None` if no anvil binary is installed (a failure under CI, see
    /// `common/require.rs`).
    pub async fn start() -> Option<Anvil> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let Some(binary) = find_anvil() else {
            require::missing(
                "anvil",
                "no anvil binary: set CSMS_TEST_ANVIL, put anvil on PATH, \
                 or run `npm install --no-save @foundry-rs/anvil` in the repository root",
            );
            return None;
        };
        // A free port found by binding port 0 can be taken by someone else
        // before anvil binds it; a few attempts make that race harmless.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Anvil::try_start(&binary).await {
                Ok(anvil) => return Some(anvil),
                Err(e) => last_error = e,
            }
        }
        panic!("anvil ({}) did not start: {last_error}", binary.display());
    }

    async fn try_start(binary: &Path) -> Result<Anvil, String> {
        let port = free_port();
        let child = Command::new(binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so that dropping kills the real node
            // even when `binary` is npm's node wrapper that spawns it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn failed: {e}"))?;
        let mut anvil = Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = anvil.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = anvil.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                return Err(format!("exited with {status}: {}", stderr.trim()));
            }
            if anvil.try_rpc("eth_chainId", json!([])).await.is_ok() {
                return Ok(anvil);
            }
            if Instant::now() > deadline {
                return Err("no answer to eth_chainId within 30 s".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The JSON-RPC endpoint, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls a JSON-RPC method and returns `result`; panics on an error.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: Value = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if let Some(error) = answer.get("error") {
            return Err(error.to_string());
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Sets an account's native balance (wei) with `anvil_setBalance`.
    pub async fn set_balance(&self, address: &str, wei: u128) {
        self.rpc("anvil_setBalance", json!([address, format!("0x{wei:x}")]))
            .await;
    }

    /// Installs runtime bytecode (hex, `0x…`) at an address with `anvil_setCode`.
    pub async fn set_code(&self, address: &str, code: &str) {
        self.rpc("anvil_setCode", json!([address, code])).await;
    }

    /// Writes one 32-byte storage slot with `anvil_setStorageAt`.
    pub async fn set_storage(&self, address: &str, slot: &str, value: &str) {
        let result = self
            .rpc("anvil_setStorageAt", json!([address, slot, value]))
            .await;
        assert_eq!(result, Value::Bool(true), "anvil_setStorageAt failed");
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // Kill the whole process group this test created (its id is the
        // child's pid), then reap the child.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_anvil() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CSMS_TEST_ANVIL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CSMS_TEST_ANVIL={} is not a file",
            path.display()
        );
        return Some(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        if let Some(found) = std::env::split_paths(&paths)
            .map(|dir| dir.join("anvil"))
            .find(|p| p.is_file())
        {
            return Some(found);
        }
    }
    let modules = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/node_modules"));
    // The npm package's `bin` is a node script that spawns the binary from
    // a platform package; using that binary directly skips node.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let platform_binary = modules.join(format!(
        "@foundry-rs/anvil-{}-{arch}/bin/anvil",
        std::env::consts::OS
    ));
    [platform_binary, modules.join(".bin/anvil")]
        .into_iter()
        .find(|p| p.is_file())
}
