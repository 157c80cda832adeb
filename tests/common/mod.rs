//! What the end-to-end tests share: a real server on port 0 backed by a real
//! SQLite file or a real PostgreSQL database, and a test charger that speaks
//! OCPP-J over a real WebSocket.
#![allow(dead_code)]

pub mod proxy;
pub mod require;
pub mod wait;
pub mod webdriver;

#[allow(unused_imports)] // not every test file waits for something
pub use wait::{eventually, until};

use csms::app::Application;
use csms::config::Config;
use csms::state::AppState;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs the same test body on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::common::postgres_url().is_none() { return; }
                super::$name($crate::common::Backend::Postgres).await
            })*
        }
    };
}

/// The PostgreSQL server tests may use, from `CSMS_TEST_POSTGRES_URL`. When it
/// is unset a PostgreSQL test fails under CI and is skipped elsewhere
/// (see [`require`]).
pub fn postgres_url() -> Option<String> {
    require::postgres_url()
}

/// A fresh, empty database for one test; a PostgreSQL one is dropped again
/// when the test is done with it.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// False for a second handle on the same database (another node's):
    /// only the first drops it.
    owned: bool,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let Some((_, name)) = self
            .url
            .rsplit_once('/')
            .filter(|_| self.url.starts_with("postgres"))
        else {
            return;
        };
        let (name, admin_url) = (
            name.to_owned(),
            std::env::var("CSMS_TEST_POSTGRES_URL").unwrap_or_default(),
        );
        // Drop runs inside the test's runtime; a thread with its own runtime
        // may block on the statement.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

impl TestDatabase {
    /// A SQLite file at `path` (in a directory the test owns).
    pub fn sqlite_at(path: &std::path::Path) -> TestDatabase {
        TestDatabase {
            url: format!("sqlite://{}", path.display()),
            _dir: None,
            owned: true,
        }
    }

    /// Another handle on the same database, for a second node; dropping it
    /// leaves the database alone.
    pub fn same(&self) -> TestDatabase {
        TestDatabase {
            url: self.url.clone(),
            _dir: None,
            owned: false,
        }
    }

    pub async fn new(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("csms.db").display());
                TestDatabase {
                    url,
                    _dir: Some(dir),
                    owned: true,
                }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin_url =
                    postgres_url().expect("PostgreSQL tests need CSMS_TEST_POSTGRES_URL");
                let name = format!("csms_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                let (base, _) = admin_url.rsplit_once('/').expect("URL has a database path");
                TestDatabase {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    owned: true,
                }
            }
        }
    }
}

pub struct TestServer {
    pub port: u16,
    pub state: AppState,
    pub db: TestDatabase,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let db = TestDatabase::new(backend).await;
        Self::start_on(db, adjust).await
    }

    pub async fn start_on(db: TestDatabase, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::for_tests(db.url.clone());
        adjust(&mut config);
        let app = Application::build(config).await.expect("server builds");
        let port = app.port();
        let state = app.state().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestServer {
            port,
            state,
            db,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn ws_url(&self, identity: &str) -> String {
        format!("ws://127.0.0.1:{}/ocpp/{}", self.port, identity)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// A charger that has connected and booted (and so is Accepted).
    pub async fn booted_charger(&self, identity: &str) -> TestCharger {
        let mut charger = TestCharger::connect(&self.ws_url(identity)).await;
        let answer = charger.boot().await;
        assert_eq!(answer["status"], "Accepted");
        charger
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
        self.db
    }

    /// A bearer token for `user` with `role`, signed with the server's secret.
    pub fn token(&self, user: &str, role: &str) -> String {
        self.state
            .jwt
            .issue(user, role, Duration::from_secs(3600))
            .unwrap()
    }

    /// Calls the REST API: (status, JSON body). `token` may be None.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http().request(method, self.http_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, json)
    }

    /// POSTs in a task of its own, for calls that make the server talk to a
    /// charger the test plays meanwhile.
    pub fn post_in_background(
        &self,
        token: &str,
        path: &str,
        body: Value,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let url = self.http_url(path);
        let token = token.to_owned();
        tokio::spawn(async move {
            let response = http()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json().await.unwrap())
        })
    }

    /// Sends a raw body (for malformed-JSON cases).
    pub async fn api_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http()
            .request(method, self.http_url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends `body` with the Content-Type given (none when None), for the
    /// media-type cases.
    pub async fn api_typed(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http()
            .request(method, self.http_url(path))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers a driver through the API; returns (user id, token).
    pub async fn register(&self, email: &str) -> (String, String) {
        let (status, body) = self
            .api(
                "POST",
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "correct-horse-9", "name": "Driver"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["data"]["user"]["id"].as_str().unwrap().to_owned(),
            body["data"]["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Adds a user with an idTag, so the tag authorizes as Accepted.
    pub async fn user_with_tag(&self, user_id: &str, id_tag: &str) {
        let now = chrono::Utc::now();
        self.state
            .store
            .upsert_user(&csms::store::UserRecord {
                id: user_id.into(),
                email: Some(format!("{user_id}@example.com")),
                name: user_id.into(),
                role: "driver".into(),
                password_hash: None,
                battery_capacity_wh: None,
                created_at: now,
            })
            .await
            .unwrap();
        self.id_tag(id_tag, Some(user_id), "Accepted", None).await;
    }

    pub async fn id_tag(
        &self,
        id_tag: &str,
        user: Option<&str>,
        status: &str,
        expiry: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        self.state
            .store
            .upsert_id_tag(&csms::store::IdTagRecord {
                id_tag: id_tag.into(),
                user_id: user.map(str::to_owned),
                status: status.into(),
                expiry_date: expiry,
                parent_id_tag: None,
                created_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
    }
}

/// An HTTP client (reqwest is built without a default TLS crypto provider;
/// install ring's, as the server does).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Starts the real `csms` binary on `database_url` (port 0) and returns it
/// with its port, read from its log. With `jwt_secret` None the server keeps
/// (or generates) the secret in its database.
pub async fn spawn_csms(
    database_url: &str,
    jwt_secret: Option<&str>,
) -> (tokio::process::Child, u16) {
    spawn_csms_with(database_url, jwt_secret, &[]).await
}

/// [`spawn_csms`] with more environment variables for the server.
pub async fn spawn_csms_with(
    database_url: &str,
    jwt_secret: Option<&str>,
    env: &[(&str, &str)],
) -> (tokio::process::Child, u16) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_csms"));
    command.envs(env.iter().copied());
    command
        .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
        .env_remove("CSMS_DATABASE_URL")
        .env("NO_COLOR", "1")
        .env("CSMS_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match jwt_secret {
        Some(secret) => command.env("CSMS_JWT_SECRET", secret),
        None => command.env_remove("CSMS_JWT_SECRET"),
    };
    let mut child = command.spawn().expect("csms binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find("listening") {
                let addr = line[at..]
                    .split("127.0.0.1:")
                    .nth(1)
                    .expect("listen address in the log");
                let digits: String = addr.chars().take_while(char::is_ascii_digit).collect();
                return digits.parse::<u16>().unwrap();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server starts in time");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A minimal charger: sends frames, reads frames, nothing automatic.
pub struct TestCharger {
    pub socket: Socket,
    next_id: u64,
}

impl TestCharger {
    /// Wraps a socket opened some other way (over TLS, say).
    pub fn from_socket(socket: Socket) -> TestCharger {
        TestCharger { socket, next_id: 1 }
    }
}

pub struct ConnectOptions<'a> {
    pub protocols: Option<&'a str>,
    pub basic_auth: Option<(&'a str, &'a str)>,
}

impl Default for ConnectOptions<'_> {
    fn default() -> Self {
        ConnectOptions {
            protocols: Some("ocpp1.6"),
            basic_auth: None,
        }
    }
}

pub async fn try_connect(
    url: &str,
    options: ConnectOptions<'_>,
) -> Result<(Socket, Option<String>), tokio_tungstenite::tungstenite::Error> {
    use base64::Engine;
    let mut request = url.into_client_request()?;
    if let Some(protocols) = options.protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    if let Some((user, password)) = options.basic_auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((socket, protocol))
}

/// The HTTP status of a refused handshake.
pub fn refused_status(error: tokio_tungstenite::tungstenite::Error) -> u16 {
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

impl TestCharger {
    pub async fn connect(url: &str) -> TestCharger {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: ConnectOptions<'_>) -> TestCharger {
        let (socket, _) = try_connect(url, options).await.expect("charger connects");
        TestCharger { socket, next_id: 1 }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::text(text.to_owned()))
            .await
            .expect("send frame");
    }

    /// The next OCPP-J frame (text), skipping control frames.
    pub async fn next_frame(&mut self) -> Value {
        self.try_next_frame(Duration::from_secs(10))
            .await
            .expect("a frame arrives in time")
    }

    pub async fn try_next_frame(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match message {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("server sends JSON"))
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Sends a CALL and returns the whole answer frame.
    pub async fn call_frame(&mut self, action: &str, payload: Value) -> Value {
        let id = format!("m{}", self.next_id);
        self.next_id += 1;
        self.send_text(&json!([2, id, action, payload]).to_string())
            .await;
        let frame = self.next_frame().await;
        assert_eq!(frame[1], id, "answer to our CALL: {frame}");
        frame
    }

    /// Sends a CALL and returns the CALLRESULT payload (fails on a CALLERROR).
    pub async fn call(&mut self, action: &str, payload: Value) -> Value {
        let frame = self.call_frame(action, payload).await;
        assert_eq!(frame[0], 3, "expected CALLRESULT, got {frame}");
        frame[2].clone()
    }

    /// Sends a raw frame and returns the CALLERROR code of the answer.
    pub async fn error_code_for(&mut self, text: &str) -> String {
        self.send_text(text).await;
        let frame = self.next_frame().await;
        assert_eq!(frame[0], 4, "expected CALLERROR for {text}, got {frame}");
        assert!(frame[4].is_object(), "errorDetails is an object: {frame}");
        frame[2].as_str().unwrap().to_owned()
    }

    pub async fn boot(&mut self) -> Value {
        self.call(
            "BootNotification",
            json!({"chargePointVendor": "TestVendor", "chargePointModel": "TestModel",
            "chargePointSerialNumber": "SN-1", "firmwareVersion": "1.0.0"}),
        )
        .await
    }

    /// Waits for a CALL from the server: (message id, action, payload).
    pub async fn expect_call(&mut self) -> (String, String, Value) {
        let frame = self.next_frame().await;
        assert_eq!(frame[0], 2, "expected a CALL from the server, got {frame}");
        (
            frame[1].as_str().unwrap().to_owned(),
            frame[2].as_str().unwrap().to_owned(),
            frame[3].clone(),
        )
    }

    pub async fn reply(&mut self, message_id: &str, payload: Value) {
        self.send_text(&json!([3, message_id, payload]).to_string())
            .await;
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

pub fn meter_sample(timestamp: &str, wh: f64, soc: Option<f64>) -> Value {
    let mut sampled = vec![
        json!({"value": format!("{wh}"), "measurand": "Energy.Active.Import.Register", "unit": "Wh", "context": "Sample.Periodic"}),
    ];
    if let Some(soc) = soc {
        sampled.push(json!({"value": format!("{soc}"), "measurand": "SoC", "unit": "Percent", "context": "Sample.Periodic"}));
    }
    json!({"timestamp": timestamp, "sampledValue": sampled})
}
