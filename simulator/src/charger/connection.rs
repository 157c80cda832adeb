//! Opening a charger's WebSocket: `ws://` or `wss://`, subprotocol `ocpp1.6`,
//! HTTP Basic auth (security profiles 1 and 2), an optional source address so a
//! fleet can open more connections than one address's ephemeral ports allow,
//! and small buffers so tens of thousands of connections fit in memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frames larger than this are refused; OCPP messages are small.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// How to reach the central system; shared by every charger of a run.
#[derive(Clone, Default)]
pub struct Endpoint {
    /// `ws://host:port/ocpp` (the charger id is appended as the last path
    /// segment) or a URL containing `{id}` where the id goes.
    pub url: String,
    /// TLS settings for `wss://`; `None` uses [`tls_config`] with no extra roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Source addresses to bind outgoing sockets to, used round-robin by charger index.
    pub source_addrs: Vec<IpAddr>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("source_addrs", &self.source_addrs)
            .finish()
    }
}

impl Endpoint {
    pub fn new(url: impl Into<String>) -> Self {
        Endpoint {
            url: url.into(),
            ..Default::default()
        }
    }

    /// The URL one charger connects to.
    pub fn url_for(&self, charger_id: &str) -> String {
        let id = percent_encode(charger_id);
        if self.url.contains("{id}") {
            self.url.replace("{id}", &id)
        } else {
            format!("{}/{}", self.url.trim_end_matches('/'), id)
        }
    }
}

/// Small per-connection buffers: tungstenite's defaults (128 KiB read buffer,
/// 128 KiB write buffer) would cost gigabytes for a large fleet.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE * 2)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// A rustls client configuration (ring provider). `ca_pem` adds trusted roots
/// (a test server's self-signed certificate or a private CA); `insecure` skips
/// verification entirely, for test servers only.
pub fn tls_config(
    ca_pem: Option<&[u8]>,
    insecure: bool,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.context("reading a CA certificate")?)
                    .context("adding a CA certificate")?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Connects one charger: TCP (bound to `source` when given), then TLS for
/// `wss://`, then the WebSocket handshake offering `ocpp1.6`.
pub async fn connect(
    endpoint: &Endpoint,
    charger_id: &str,
    password: Option<&str>,
    source: Option<IpAddr>,
    timeout: Duration,
) -> anyhow::Result<Ws> {
    tokio::time::timeout(
        timeout,
        connect_inner(endpoint, charger_id, password, source),
    )
    .await
    .context("connect timed out")?
}

async fn connect_inner(
    endpoint: &Endpoint,
    charger_id: &str,
    password: Option<&str>,
    source: Option<IpAddr>,
) -> anyhow::Result<Ws> {
    let url = endpoint.url_for(charger_id);
    let mut request = url.as_str().into_client_request().context("charger URL")?;
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("ocpp1.6"),
    );
    if let Some(password) = password {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{charger_id}:{password}"));
        headers.insert(
            "Authorization",
            HeaderValue::from_str(&format!("Basic {token}"))?,
        );
    }
    let uri = request.uri().clone();
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        other => bail!("unsupported scheme {other:?}"),
    };
    let host = uri
        .host()
        .context("URL without host")?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let server = pick_address(host, port, source).await?;
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("binding to {source}"))?;
    }
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_nodelay(true)?;
    let connector = if tls {
        let config = match &endpoint.tls {
            Some(c) => c.clone(),
            None => tls_config(None, false)?,
        };
        Connector::Rustls(config)
    } else {
        Connector::Plain
    };
    let (ws, response) = tokio_tungstenite::client_async_tls_with_config(
        request,
        stream,
        Some(ws_config()),
        Some(connector),
    )
    .await
    .context("WebSocket handshake")?;
    match response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
    {
        Some("ocpp1.6") | None => {}
        Some(other) => bail!("server chose subprotocol {other}"),
    }
    Ok(ws)
}

/// Resolves the server, preferring an address of the same family as the source.
async fn pick_address(host: &str, port: u16, source: Option<IpAddr>) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .collect();
    let same_family = |a: &&SocketAddr| source.is_none_or(|s| s.is_ipv4() == a.is_ipv4());
    addrs
        .iter()
        .find(same_family)
        .or(addrs.first())
        .copied()
        .context("host has no address")
}

/// Percent-encodes a charger id for the last path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `127.0.0.1-127.0.0.8`, `127.0.0.2,127.0.0.3` or a mix of both.
pub fn parse_source_addrs(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (
                a.trim().parse().context("range start")?,
                b.trim().parse().context("range end")?,
            );
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                bail!("bad address range {part}");
            }
            out.extend((a..=b).map(|n| IpAddr::V4(n.into())));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("bad address {part}"))?,
            );
        }
    }
    Ok(out)
}

/// Accepts every server certificate (`--insecure`): only for test servers.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charger_id_is_the_last_path_segment() {
        assert_eq!(
            Endpoint::new("ws://h:1/ocpp/").url_for("CP 1"),
            "ws://h:1/ocpp/CP%201"
        );
        assert_eq!(
            Endpoint::new("ws://h/x/{id}/y").url_for("A"),
            "ws://h/x/A/y"
        );
    }

    #[test]
    fn source_address_ranges_expand() {
        let v = parse_source_addrs("127.0.0.1-127.0.0.3, 127.0.0.9").unwrap();
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(s, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"]);
        assert!(parse_source_addrs("127.0.0.5-127.0.0.1").is_err());
    }
}
