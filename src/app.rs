//! Building and running the server: open the store, bind the listener, serve
//! HTTP and the OCPP WebSocket endpoint on it, shut down gracefully.

use crate::api;
use crate::charger::auth::FailureLimiter;
use crate::charger::{handshake, Registry};
use crate::cluster::{Cluster, PgCluster};
use crate::config::Config;
use crate::state::AppState;
use crate::store;
use anyhow::{Context, Result};
use axum::routing::any;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

pub struct Application {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    stop: watch::Sender<bool>,
    /// Held while a node serves a SQLite file (SQLite is single-node).
    sqlite_lock: Option<crate::cluster::SqliteLock>,
}

impl Application {
    /// Opens and migrates the database and binds the listener, so that once
    /// this returns the port is known and `/health` will answer.
    pub async fn build(config: Config) -> Result<Self> {
        // rustls needs one process-wide crypto provider; a second install
        // (tests build several apps) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::ocpp::schema::preload();
        if !config.webhook_urls.0.is_empty()
            && config.webhook_secret.as_deref().unwrap_or("").is_empty()
        {
            anyhow::bail!("CSMS_WEBHOOK_URLS is set but CSMS_WEBHOOK_SECRET is not: webhooks are always signed");
        }
        if config.node_timeout < Duration::from_millis(500) {
            anyhow::bail!("CSMS_NODE_TIMEOUT must be at least 500ms");
        }
        // Before anything else touches the file: a second node on one
        // SQLite database refuses to start.
        let sqlite_lock = if config.database_url.starts_with("sqlite:") {
            crate::cluster::SqliteLock::acquire(&config.database_url)?
        } else {
            None
        };
        let store = store::connect(&config.database_url).await?;
        let store_metrics = store.writer_metrics();
        let jwt = api::auth::JwtKeys::load(config.jwt_secret.as_deref(), store.as_ref()).await?;
        let listener = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (stop, shutdown) = watch::channel(false);
        let config = Arc::new(config);
        let cluster = if store.backend() == "postgres" {
            Cluster::Postgres(Arc::new(
                PgCluster::join(
                    &config.database_url,
                    config.node_timeout,
                    config.ocpp_call_timeout,
                )
                .await?,
            ))
        } else {
            Cluster::Single
        };
        let registry = Registry::new(cluster.clone());
        let engine = crate::engine::Engine::new(store.clone(), registry.clone(), config.clone());
        engine.load_sites().await.context("loading the sites")?;
        if let Cluster::Postgres(node) = &cluster {
            node.start(registry.clone(), engine.events().clone());
        }
        let payments =
            crate::payments::Payments::new(store.clone(), engine.clone(), config.clone())?;
        let state = AppState {
            connection_slots: Arc::new(Semaphore::new(config.max_chargers)),
            config,
            store,
            registry,
            engine,
            payments,
            jwt: Arc::new(jwt),
            handshake_failures: Arc::new(FailureLimiter::new(10, Duration::from_secs(60))),
            shutdown,
            metrics: Arc::new(crate::metrics::Metrics::new(store_metrics)),
            login_failures: Arc::new(api::auth::LoginLimits::default()),
        };
        Ok(Application {
            listener,
            local_addr,
            state,
            stop,
            sqlite_lock,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state, for tests and embedding (the store, the registry).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn router(state: AppState) -> Router {
        let cors = cors_layer(&state.config.cors_origins);
        let router = Router::new()
            .route("/ocpp/{*identity}", any(handshake::upgrade))
            .route("/ocpp/", any(handshake::upgrade_without_identity))
            .merge(api::router());
        let router = with_http_trace(router);
        let router = match cors {
            Some(cors) => router.layer(cors),
            None => router,
        };
        router.with_state(state)
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `signal` completes, then closes every charger connection
    /// with a WebSocket close frame, lets in-flight messages finish, and
    /// flushes the store.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Application {
            listener,
            local_addr,
            state,
            stop,
            sqlite_lock,
        } = self;
        let app = Self::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let scheme = if state.config.tls_cert.is_some() {
            "https/wss"
        } else {
            "http/ws"
        };
        tracing::info!(%local_addr, scheme, database = state.store.backend(), "csms listening");

        let sweeper = tokio::spawn(
            state
                .engine
                .clone()
                .sweep_remote_starts(Duration::from_secs(2)),
        );
        let payment_sweeper = tokio::spawn(state.payments.clone().sweep(Duration::from_secs(1)));
        let reservation_sweeper = tokio::spawn(sweep_reservations(
            state.engine.clone(),
            Duration::from_secs(1),
        ));
        let webhooks = tokio::spawn(crate::webhooks::run(
            state.store.clone(),
            state.config.clone(),
            state.registry.cluster().clone(),
        ));
        let handle = axum_server::Handle::new();
        let stopper = {
            let handle = handle.clone();
            let registry = state.registry.clone();
            tokio::spawn(async move {
                signal.await;
                tracing::info!("shutting down: closing charger connections");
                let _ = stop.send(true);
                // Connection tasks finish the message in hand, send a close
                // frame and deregister; give them a bounded time to do so.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while registry.count() > 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                handle.graceful_shutdown(Some(Duration::from_secs(5)));
            })
        };

        match (&state.config.tls_cert, &state.config.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .context("loading the TLS certificate and key")?;
                axum_server::from_tcp_rustls(listener, tls)?
                    .handle(handle)
                    .serve(app)
                    .await?;
            }
            _ => {
                axum_server::from_tcp(listener)?
                    .handle(handle)
                    .serve(app)
                    .await?;
            }
        }
        let _ = stopper.await;
        sweeper.abort();
        payment_sweeper.abort();
        reservation_sweeper.abort();
        webhooks.abort();
        state.store.flush().await.context("flushing the store")?;
        if let Cluster::Postgres(node) = state.registry.cluster() {
            node.leave().await;
        }
        if let Some(lock) = sqlite_lock {
            lock.release();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Marks reservations past their expiry `expired`, every `every`. Each round
/// reads only the due ones, so it is right across restarts; with several
/// nodes it runs on the one holding the `reservations` lease.
async fn sweep_reservations(engine: crate::engine::Engine, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if !engine.cluster().lease("reservations", every).await {
            continue;
        }
        if let Err(e) = engine.expire_reservations(chrono::Utc::now()).await {
            tracing::warn!("reservation sweep failed: {e:#}");
        }
    }
}

/// A span per HTTP request (method, route, status, latency), so every log
/// line a handler writes says which request it is about, and one line per
/// finished request. A charger's WebSocket upgrade (101) is logged at debug:
/// its connection has a span of its own, and a reconnect storm would
/// otherwise write a line per charger.
fn with_http_trace(router: Router<AppState>) -> Router<AppState> {
    let layer = tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
            // The route's pattern, not the path: ids stay out of the field.
            let route = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "(no route)".to_owned());
            tracing::info_span!(
                "http",
                method = %request.method(),
                route = %route,
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            )
        })
        .on_response(
            |response: &axum::http::Response<axum::body::Body>,
             latency: Duration,
             span: &tracing::Span| {
                let status = response.status().as_u16();
                let latency_ms = latency.as_secs_f64() * 1000.0;
                span.record("status", status);
                span.record("latency_ms", latency_ms);
                if status == 101 {
                    tracing::debug!(status, latency_ms, "request finished");
                } else {
                    tracing::info!(status, latency_ms, "request finished");
                }
            },
        )
        .on_body_chunk(())
        .on_eos(())
        .on_failure(());
    router.layer(layer)
}

/// CORS for the configured browser origins; `None` (no CORS headers at all,
/// so browsers refuse cross-origin calls) when none are configured.
fn cors_layer(origins: &crate::config::Origins) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderValue, Method};
    if origins.0.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .0
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .max_age(Duration::from_secs(3600)),
    )
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
