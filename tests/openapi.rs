//! The OpenAPI document against the server it describes: every route in
//! the source is in the document and every operation in the document
//! answers; real answers from a whole driver, payment and operator flow
//! validate against the schemas the document gives for their status; the
//! interactive reference is served from the binary with nothing fetched.

mod common;

use common::webdriver::Driver;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Routes that are not API operations: the reference page's and the
/// console's own static files, and `/docs`, which only redirects to `/docs/`.
const NOT_OPERATIONS: &[&str] = &[
    "/console/{*file}",
    "/docs",
    "/docs/swagger-ui-bundle.js",
    "/docs/swagger-ui.css",
];

async fn document(server: &TestServer) -> Value {
    let response = http()
        .get(server.http_url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// `/a/{id}/b/{*rest}` → `/a/{}/b/{}`: parameter names differ between the
/// router and the document, positions do not.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every `.route("path", method(handler).method(handler))` in the source,
/// as (method, path). `any(...)` is the WebSocket endpoint, a GET.
fn routes_in_source() -> BTreeSet<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let call = {
                // The call's text up to its closing parenthesis.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map(|(i, _)| i)
                    .unwrap_or_else(|| panic!("unclosed .route( in {}", file.display()));
                &rest[..end]
            };
            let call = call.trim_start();
            let Some(literal) = call.strip_prefix('"') else {
                // Another type's `route` method (the registry routes a
                // command to a node), in a file that builds no router.
                if !text.contains("Router") {
                    continue;
                }
                panic!(
                    "a route whose path is not a literal in {}: {call}",
                    file.display()
                );
            };
            let path = &literal[..literal.find('"').unwrap()];
            let handlers = &literal[path.len() + 1..];
            let mut found = false;
            for method in ["get", "post", "put", "delete", "patch", "any"] {
                let mut from = 0;
                while let Some(i) = handlers[from..].find(&format!("{method}(")) {
                    let i = from + i;
                    let before = handlers[..i].chars().last();
                    if matches!(before, Some(c) if c.is_alphanumeric() || c == '_') {
                        from = i + 1;
                        continue;
                    }
                    let method = if method == "any" { "get" } else { method };
                    routes.insert((method.to_owned(), path.to_owned()));
                    found = true;
                    from = i + 1;
                }
            }
            assert!(found, "no method in route {path} in {}", file.display());
        }
    }
    routes
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                out.insert((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_source_is_in_the_document_and_no_other() {
    let server = TestServer::start(Backend::Sqlite).await;
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let source: BTreeSet<(String, String)> = routes_in_source()
        .into_iter()
        .filter(|(_, p)| !NOT_OPERATIONS.contains(&p.as_str()))
        .map(|(m, p)| (m, shape(&p)))
        .collect();
    assert!(
        source.len() >= 40,
        "the scan found only {} routes: {source:?}",
        source.len()
    );
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p)| (m, shape(&p)))
        .collect();
    let missing: Vec<_> = source.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes the document lacks (add #[utoipa::path] and list the handler in its module's Doc): {missing:?}"
    );
    let phantom: Vec<_> = documented.difference(&source).collect();
    assert!(
        phantom.is_empty(),
        "operations in the document with no route: {phantom:?}"
    );

    // Unique operation ids, every operation tagged and described, every
    // JSON operation with the error envelope as its default answer.
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path} has no tag"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        for (status, r) in responses {
            assert!(
                r["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path} {status} has no description"
            );
        }
        let tag = op["tags"][0].as_str().unwrap();
        if tag != "ocpp" && tag != "pages" {
            assert_eq!(
                responses["default"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers() {
    let server = TestServer::start(Backend::Sqlite).await;
    let doc = document(&server).await;
    let admin = server.token("ops", "admin");
    let client = http();
    for (method, path) in operations(&doc) {
        // Parameters filled with ids nobody has: each answers for itself
        // (404, 400, 409...), never the router's "No such endpoint" or 405.
        let concrete = shape(&path).replace("{}", "nobody-1");
        let mut request = client
            .request(
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                server.http_url(&concrete),
            )
            .bearer_auth(&admin);
        if method != "get" {
            request = request.json(&json!({}));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let is_json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        // Event streams never end: the status and headers are enough.
        let body: Value = if is_json {
            response.json().await.unwrap()
        } else {
            Value::Null
        };
        assert_ne!(status, 405, "{method} {path}: method not allowed");
        assert!(
            !(status == 404 && body["error"] == "No such endpoint"),
            "{method} {path} ({concrete}) fell through to the router's 404"
        );
        let documented = doc["paths"][&path][&method]["responses"]
            .as_object()
            .unwrap();
        assert!(
            documented.contains_key(&status.to_string()) || documented.contains_key("default"),
            "{method} {concrete} answered {status}, which the document does not list"
        );
    }
}

/// Validates answers against the document's schema for their operation
/// and status, and remembers which operations it saw.
struct Checker {
    doc: Value,
    templates: Vec<(String, String)>,
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Checker {
    fn new(doc: Value) -> Checker {
        let templates = operations(&doc).into_iter().collect();
        Checker {
            doc,
            templates,
            seen: BTreeMap::new(),
        }
    }

    fn template(&self, method: &str, concrete: &str) -> String {
        let path = concrete.split('?').next().unwrap();
        let parts: Vec<&str> = path.split('/').collect();
        // The most literal match wins (`/sessions/active` over `/sessions/{id}`).
        self.templates
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, t)| t)
            .filter(|t| {
                let tp: Vec<&str> = t.split('/').collect();
                tp.len() == parts.len()
                    && tp
                        .iter()
                        .zip(&parts)
                        .all(|(t, p)| t.starts_with('{') || t == p)
            })
            .max_by_key(|t| t.split('/').filter(|s| !s.starts_with('{')).count())
            .unwrap_or_else(|| panic!("{method} {concrete} is not in the document"))
            .clone()
    }

    fn check(&mut self, method: &str, concrete: &str, status: u16, body: &Value) {
        let method = method.to_lowercase();
        let template = self.template(&method, concrete);
        let responses = &self.doc["paths"][&template][&method]["responses"];
        let response = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| panic!("{method} {template}: status {status} not documented"));
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{method} {template} {status}: no JSON schema documented"
        );
        let root = json!({ "$ref": "#/$defs/answer", "$defs": { "answer": schema }, "components": self.doc["components"] });
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("{method} {template} {status}: bad schema: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {concrete} {status} does not match the document:\n{}\nbody: {body}",
            errors.join("\n")
        );
        // A charger's own answers (a command's, a composite schedule) are
        // OCPP payloads, free-form in the document.
        if !template.ends_with("/commands/{action}") && !template.ends_with("/composite-schedule") {
            let known = self.property_names();
            let mut unknown = BTreeSet::new();
            undocumented_keys(body, &known, &mut unknown);
            assert!(
                unknown.is_empty(),
                "{method} {concrete} {status} answers fields no schema in the document names: {unknown:?}"
            );
        }
        // The envelope's own fields are the schema's: a paged answer checked
        // against a plain `Data` schema (extra fields allowed) fails here.
        if let (Some(object), Some(named)) = (body.as_object(), self.top_level_properties(schema)) {
            let extra: Vec<&String> = object.keys().filter(|k| !named.contains(*k)).collect();
            assert!(
                extra.is_empty(),
                "{method} {concrete} {status} answers top-level fields its schema lacks: {extra:?}"
            );
        }
        self.seen
            .entry((method, template))
            .or_default()
            .insert(status);
    }
}

impl Checker {
    /// The property names of a schema (through `$ref` and `allOf`), or
    /// `None` when it does not list them (free-form, or a choice).
    fn top_level_properties(&self, schema: &Value) -> Option<BTreeSet<String>> {
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.strip_prefix("#/components/schemas/")?;
            return self.top_level_properties(&self.doc["components"]["schemas"][name]);
        }
        let mut names: BTreeSet<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            names.extend(self.top_level_properties(part)?);
        }
        (!names.is_empty()).then_some(names)
    }

    /// Every property name any schema in the document gives.
    fn property_names(&self) -> BTreeSet<String> {
        fn collect(v: &Value, out: &mut BTreeSet<String>) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::Object(props)) = map.get("properties") {
                        out.extend(props.keys().cloned());
                    }
                    map.values().for_each(|v| collect(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
                _ => {}
            }
        }
        let mut out = BTreeSet::new();
        collect(&self.doc["components"], &mut out);
        out
    }
}

/// Keys in an answer that no schema names: a field the server sends and
/// the document does not describe (schemas allow extra properties, so the
/// validator alone would let it pass). Free-form values (`metadata`,
/// `details`, an anomaly's `detail`, a map by currency, an OCPP charging
/// profile) are not looked into.
fn undocumented_keys(body: &Value, known: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    match body {
        Value::Object(map) => {
            for (k, v) in map {
                if !known.contains(k) {
                    out.insert(k.clone());
                }
                if ![
                    "metadata",
                    "details",
                    "detail",
                    "spentByCurrency",
                    "chargingProfile",
                ]
                .contains(&k.as_str())
                {
                    undocumented_keys(v, known, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| undocumented_keys(v, known, out)),
        _ => {}
    }
}

async fn call(
    server: &TestServer,
    checker: &mut Checker,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, json) = server.api(method, path, token, body).await;
    checker.check(method, path, status, &json);
    (status, json)
}

/// Sends a request that makes the server call the charger, plays the
/// charger's side (each CALL expected in turn and answered), and checks the
/// answer's status and its body against the document.
async fn answered(
    c: &mut Checker,
    server: &TestServer,
    charger: &mut TestCharger,
    (method, path, token, body): (&str, String, &str, Option<Value>),
    replies: &[(&str, Value)],
    expect_status: u16,
) -> Value {
    let mut request = http()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            server.http_url(&path),
        )
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let sent = tokio::spawn(async move {
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    });
    for (expect, answer) in replies {
        let (id, action, _) = charger.expect_call().await;
        assert_eq!(&action, expect);
        charger.reply(&id, answer.clone()).await;
    }
    let (status, body) = sent.await.unwrap();
    assert_eq!(status, expect_status, "{method} {path}: {body}");
    c.check(method, &path, status, &body);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_their_documented_schemas() {
    let server = TestServer::start(Backend::Sqlite).await;
    let mut c = Checker::new(document(&server).await);
    let c = &mut c;
    let s = &server;
    let admin = server.token("ops", "admin");
    let a = Some(admin.as_str());

    // Operating.
    call(s, c, "GET", "/health", None, None).await;
    call(s, c, "GET", "/ready", None, None).await;

    // A driver: register, log in, a session from start to end, the 693 and
    // 3465 NGN examples of the contract.
    let (status, body) = call(
        s,
        c,
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": "ada@example.com", "password": "correct-horse-9", "name": "Ada"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let user = body["data"]["user"]["id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        s,
        c,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "ada@example.com", "password": "correct-horse-9"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_owned();
    let t = Some(token.as_str());
    call(
        s,
        c,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "ada@example.com", "password": "wrong-password"})),
    )
    .await;
    call(s, c, "GET", "/api/auth/me", t, None).await;
    call(
        s,
        c,
        "GET",
        "/api/auth/me",
        Some(&server.token("minted-only", "driver")),
        None,
    )
    .await;
    call(s, c, "GET", "/api/charging/sessions/active", t, None).await;

    let demo = "evliter-lagos-victoria-island";
    let (status, body) = call(
        s,
        c,
        "POST",
        "/api/charging/sessions/start",
        t,
        Some(json!({"stationId": demo, "connectorId": "connector-1", "batteryLevelStart": 45})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sid = body["data"]["id"].as_str().unwrap().to_owned();
    let (_, body) = call(
        s,
        c,
        "PUT",
        "/api/charging/sessions/active/update",
        t,
        Some(json!({"batteryLevel": 52, "energyDelivered": 4.2})),
    )
    .await;
    assert_eq!(body["data"]["totalCost"], 693);
    call(
        s,
        c,
        "PUT",
        "/api/charging/sessions/active/update",
        t,
        Some(json!({"batteryLevel": 101})),
    )
    .await;
    call(
        s,
        c,
        "POST",
        "/api/charging/sessions/start",
        t,
        Some(json!({"stationId": demo, "connectorId": "connector-2", "batteryLevelStart": 45})),
    )
    .await;
    call(s, c, "GET", "/api/charging/sessions/active", t, None).await;
    call(
        s,
        c,
        "GET",
        &format!("/api/charging/sessions/{sid}"),
        t,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        "/api/charging/sessions/no-such-session",
        t,
        None,
    )
    .await;
    let (status, _) = call(
        s,
        c,
        "POST",
        "/api/charging/sessions/end",
        t,
        Some(json!({"sessionId": sid, "batteryLevelEnd": 80, "stationRating": 5})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = call(
        s,
        c,
        "POST",
        "/api/charging/sessions/start",
        t,
        Some(json!({"stationId": demo, "connectorId": 1, "batteryLevelStart": 45})),
    )
    .await;
    let sid2 = body["data"]["id"].as_str().unwrap().to_owned();
    let (_, body) = call(
        s,
        c,
        "POST",
        "/api/charging/sessions/end",
        t,
        Some(json!({"sessionId": sid2, "batteryLevelEnd": 80})),
    )
    .await;
    assert_eq!(
        (
            body["data"]["energyDelivered"].clone(),
            body["data"]["totalCost"].clone()
        ),
        (json!(21), json!(3465))
    );
    let (_, body) = call(s, c, "POST", "/api/charging/sessions/start", t,
        Some(json!({"stationId": "nowhere-1", "connectorId": "connector-1", "batteryLevelStart": 10}))).await;
    let sid3 = body["data"]["id"].as_str().unwrap().to_owned();
    call(s, c, "GET", "/api/admin/sessions", a, None).await;
    call(
        s,
        c,
        "POST",
        "/api/charging/sessions/cancel",
        t,
        Some(json!({"sessionId": sid3})),
    )
    .await;
    call(
        s,
        c,
        "GET",
        "/api/charging/sessions?filter=recent&limit=10",
        t,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        "/api/charging/sessions?filter=someday",
        t,
        None,
    )
    .await;
    call(s, c, "GET", "/api/charging/stats", t, None).await;
    call(s, c, "GET", "/api/charging/dashboard", t, None).await;
    call(s, c, "GET", "/api/admin/users", t, None).await; // 403

    // An operator: a station that is a connected charger, users, idTags.
    let charger_id = "CP-DOC";
    call(s, c, "PUT", "/api/admin/stations/CP-WITH-PASSWORD", a,
        Some(json!({"name": "Locked Hub", "pricePerKWh": 0.35, "currency": "EUR", "ocppPassword": "a-16-to-40-char-secret"}))).await;
    call(
        s,
        c,
        "PUT",
        &format!("/api/admin/stations/{charger_id}"),
        a,
        Some(json!({"name": "Doc Hub", "pricePerKWh": -1, "currency": "NGN"})),
    )
    .await;
    call(
        s,
        c,
        "PUT",
        &format!("/api/admin/stations/{charger_id}"),
        a,
        Some(json!({"name": "Doc Hub", "pricePerKWh": 165, "currency": "NGN"})),
    )
    .await;
    call(
        s,
        c,
        "PUT",
        "/api/admin/stations/CP-OTHER/registration",
        a,
        Some(json!({"status": "Accepted"})),
    )
    .await;
    let mut charger = server.booted_charger(charger_id).await;
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
        )
        .await;
    call(s, c, "GET", "/api/admin/stations?limit=10", a, None).await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/stations/{charger_id}"),
        a,
        None,
    )
    .await;
    call(s, c, "GET", "/api/admin/stations/nobody", a, None).await;
    call(s, c, "PUT", "/api/admin/users/u-42", a,
        Some(json!({"name": "Fleet car 42", "email": "car42@example.com", "role": "driver", "batteryCapacity": 77}))).await;
    call(s, c, "GET", "/api/admin/users", a, None).await;
    call(
        s,
        c,
        "PUT",
        "/api/admin/id-tags/RFID0042",
        a,
        Some(json!({"userId": user, "status": "Accepted", "expiryDate": "2099-01-01T00:00:00Z"})),
    )
    .await;
    call(s, c, "GET", "/api/admin/id-tags/rfid0042", a, None).await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/id-tags?userId={user}"),
        a,
        None,
    )
    .await;

    // A command the charger answers, a transaction, a message log.
    answered(
        c,
        s,
        &mut charger,
        (
            "POST",
            format!("/api/admin/stations/{charger_id}/commands/GetConfiguration"),
            &admin,
            Some(json!({"key": ["HeartbeatInterval"]})),
        ),
        &[(
            "GetConfiguration",
            json!({"configurationKey": [{"key": "HeartbeatInterval", "readonly": false, "value": "300"}]}),
        )],
    200,
    )
    .await;
    call(
        s,
        c,
        "POST",
        &format!("/api/admin/stations/{charger_id}/commands/Reset"),
        a,
        Some(json!({"type": "Sideways"})),
    )
    .await;
    call(
        s,
        c,
        "POST",
        "/api/admin/stations/CP-NOT-HERE/commands/Reset",
        a,
        Some(json!({"type": "Soft"})),
    )
    .await;
    let started = charger.call("StartTransaction",
        json!({"connectorId": 1, "idTag": "RFID0042", "meterStart": 1000, "timestamp": "2024-01-15T10:00:00Z"})).await;
    let tx = started["transactionId"].as_i64().unwrap();
    charger
        .call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": tx,
        "meterValue": [meter_sample("2024-01-15T10:15:00Z", 900.0, None)]}),
        )
        .await; // a register going backwards: an anomaly
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 5200, "timestamp": "2024-01-15T10:30:00Z"}),
        )
        .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/stations/{charger_id}/transactions?status=stopped"),
        a,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/stations/{charger_id}/transactions?status=sideways"),
        a,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/stations/{charger_id}/messages?limit=5"),
        a,
        None,
    )
    .await;
    let (_, body) = call(
        s,
        c,
        "GET",
        &format!("/api/admin/anomalies?chargerId={charger_id}"),
        a,
        None,
    )
    .await;
    assert!(!body["data"].as_array().unwrap().is_empty(), "{body}");
    call(s, c, "GET", "/api/admin/ingest", a, None).await;

    // Payments: a credit, a refused start, a paid session with its link.
    call(
        s,
        c,
        "POST",
        &format!("/api/admin/users/{user}/wallet/credit"),
        a,
        Some(json!({"amount": 1000, "currency": "NGN", "walletAddress": "0xWallet"})),
    )
    .await;
    let paid_start = |max: i64| {
        json!({"userId": user, "chargerId": charger_id, "walletAddress": "0xWallet",
        "chain": "ledger-chain", "expectedMaxCost": max, "connectorId": 1, "metadata": {"app": "doc"}})
    };
    let (status, _) = call(
        s,
        c,
        "POST",
        "/api/v1/session/start",
        t,
        Some(paid_start(5000)),
    )
    .await;
    assert_eq!(status, 402);
    call(
        s,
        c,
        "POST",
        &format!("/api/admin/users/{user}/wallet/credit"),
        a,
        Some(json!({"amount": 9000, "currency": "NGN", "walletAddress": "0xWallet"})),
    )
    .await;
    let started = server.post_in_background(&token, "/api/v1/session/start", paid_start(5000));
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "RemoteStartTransaction");
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let begun = charger.call("StartTransaction",
        json!({"connectorId": 1, "idTag": payload["idTag"], "meterStart": 0, "timestamp": "2024-01-16T10:00:00Z"})).await;
    let tx = begun["transactionId"].as_i64().unwrap();
    let (status, body) = started.await.unwrap();
    c.check("POST", "/api/v1/session/start", status, &body);
    assert_eq!(status, 201, "{body}");
    let paid = body["data"]["sessionId"].as_str().unwrap().to_owned();
    let check = body["data"]["balanceCheckId"].as_str().unwrap().to_owned();
    call(s, c, "GET", &format!("/api/v1/user/{user}/wallet"), t, None).await;
    let stopped = server.post_in_background(
        &token,
        "/api/v1/session/stop",
        json!({"userId": user, "sessionId": paid}),
    );
    let (id, action, _) = charger.expect_call().await;
    assert_eq!(action, "RemoteStopTransaction");
    charger.reply(&id, json!({"status": "Accepted"})).await;
    charger.call("StopTransaction", json!({"transactionId": tx, "meterStop": 4200, "timestamp": "2024-01-16T10:30:00Z", "reason": "Remote"})).await;
    let (status, body) = stopped.await.unwrap();
    c.check("POST", "/api/v1/session/stop", status, &body);
    assert_eq!(status, 200, "{body}");
    let link = body["data"]["paymentLinkId"].as_str().unwrap().to_owned();
    call(
        s,
        c,
        "GET",
        &format!("/api/v1/user/{user}/balance-checks"),
        t,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/v1/user/balance-check/{check}"),
        t,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/v1/user/{user}/sessions"),
        t,
        None,
    )
    .await;
    call(s, c, "GET", "/api/v1/user/someone-else/sessions", t, None).await;
    call(
        s,
        c,
        "GET",
        &format!("/api/v1/payment-links/{link}"),
        t,
        None,
    )
    .await;
    let (status, body) = call(
        s,
        c,
        "POST",
        &format!("/api/v1/payment-links/{link}/recreate"),
        t,
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let link = body["data"]["paymentLinkId"].as_str().unwrap().to_owned();
    let (status, _) = call(
        s,
        c,
        "POST",
        &format!("/api/v1/payment-links/{link}/pay"),
        t,
        None,
    )
    .await;
    assert_eq!(status, 200);
    call(
        s,
        c,
        "POST",
        &format!("/api/v1/payment-links/{link}/pay"),
        t,
        None,
    )
    .await; // 409, paid
    call(
        s,
        c,
        "POST",
        "/api/v1/webhooks/stripe",
        None,
        Some(json!({})),
    )
    .await;

    // What the console reads: history, a transaction, a user, money.
    call(
        s,
        c,
        "GET",
        "/api/admin/sessions/history?status=completed&q=doc",
        a,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        "/api/admin/sessions/history?from=yesterday",
        a,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/transactions/{tx}"),
        a,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/transactions/{tx}/messages?limit=50"),
        a,
        None,
    )
    .await;
    call(s, c, "GET", "/api/admin/transactions/12x", a, None).await;
    call(s, c, "GET", &format!("/api/admin/users/{user}"), a, None).await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/users/{user}/ledger"),
        a,
        None,
    )
    .await;
    call(s, c, "GET", "/api/admin/payment-links?status=paid", a, None).await;
    call(
        s,
        c,
        "GET",
        "/api/admin/balance-checks?status=INSUFFICIENT",
        a,
        None,
    )
    .await;

    // Server-kept state: reservations, charging profiles, a local list,
    // each with the test charger answering the server's CALLs.
    let expiry = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let body = answered(c, s, &mut charger, ("POST", "/api/admin/reservations".into(), &admin,
        Some(json!({"chargerId": charger_id, "connectorId": 1, "idTag": "RFID0042", "expiryDate": expiry}))), &[("ReserveNow", json!({"status": "Accepted"}))], 201).await;
    let reservation = body["data"]["id"].as_i64().unwrap();
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/reservations?chargerId={charger_id}&status=accepted"),
        a,
        None,
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/reservations/{reservation}"),
        a,
        None,
    )
    .await;
    call(s, c, "POST", "/api/admin/reservations", a,
        Some(json!({"chargerId": charger_id, "connectorId": 1, "idTag": "RFID0042", "expiryDate": "2001-01-01T00:00:00Z"}))).await;
    answered(
        c,
        s,
        &mut charger,
        (
            "DELETE",
            format!("/api/admin/reservations/{reservation}"),
            &admin,
            None,
        ),
        &[("CancelReservation", json!({"status": "Accepted"}))],
        200,
    )
    .await;
    let body = answered(
        c,
        s,
        &mut charger,
        (
            "POST",
            "/api/charging/reservations".into(),
            &token,
            Some(json!({"stationId": charger_id, "connectorId": "connector-1", "minutes": 30})),
        ),
        &[("ReserveNow", json!({"status": "Accepted"}))],
        201,
    )
    .await;
    let mine = body["data"]["id"].as_i64().unwrap();
    call(s, c, "GET", "/api/charging/reservations", t, None).await;
    call(
        s,
        c,
        "GET",
        &format!("/api/charging/reservations/{mine}"),
        t,
        None,
    )
    .await;
    answered(
        c,
        s,
        &mut charger,
        (
            "DELETE",
            format!("/api/charging/reservations/{mine}"),
            &token,
            None,
        ),
        &[("CancelReservation", json!({"status": "Accepted"}))],
        200,
    )
    .await;

    let profile = json!({"connectorId": 0, "chargingProfile": {"stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}});
    let body = answered(
        c,
        s,
        &mut charger,
        (
            "POST",
            format!("/api/admin/stations/{charger_id}/charging-profiles"),
            &admin,
            Some(profile),
        ),
        &[("SetChargingProfile", json!({"status": "Accepted"}))],
        201,
    )
    .await;
    let profile_id = body["data"]["id"].as_i64().unwrap();
    call(
        s,
        c,
        "POST",
        &format!("/api/admin/stations/{charger_id}/charging-profiles"),
        a,
        Some(json!({"connectorId": 0, "chargingProfile": {"stackLevel": "high"}})),
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/stations/{charger_id}/charging-profiles"),
        a,
        None,
    )
    .await;
    answered(c, s, &mut charger, ("GET", format!("/api/admin/stations/{charger_id}/composite-schedule?connectorId=0&duration=3600"), &admin, None), &[("GetCompositeSchedule", json!({"status": "Accepted", "connectorId": 0, "scheduleStart": "2024-01-16T10:00:00Z",
            "chargingSchedule": {"duration": 3600, "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}))], 200).await;
    answered(
        c,
        s,
        &mut charger,
        (
            "DELETE",
            format!("/api/admin/stations/{charger_id}/charging-profiles/{profile_id}"),
            &admin,
            None,
        ),
        &[("ClearChargingProfile", json!({"status": "Accepted"}))],
        200,
    )
    .await;

    answered(
        c,
        s,
        &mut charger,
        (
            "PUT",
            format!("/api/admin/stations/{charger_id}/local-list"),
            &admin,
            Some(json!({"enabled": true})),
        ),
        &[
            (
                "GetConfiguration",
                json!({"configurationKey": [
                    {"key": "LocalAuthListEnabled", "readonly": false, "value": "true"},
                    {"key": "SendLocalListMaxLength", "readonly": true, "value": "100"},
                    {"key": "LocalAuthListMaxLength", "readonly": true, "value": "100"}]}),
            ),
            ("SendLocalList", json!({"status": "Accepted"})),
        ],
        200,
    )
    .await;
    call(
        s,
        c,
        "PUT",
        &format!("/api/admin/stations/{charger_id}/local-list"),
        a,
        Some(json!({"enabled": "yes"})),
    )
    .await;
    call(
        s,
        c,
        "GET",
        &format!("/api/admin/stations/{charger_id}/local-list"),
        a,
        None,
    )
    .await;
    call(s, c, "GET", "/api/admin/local-lists", a, None).await;

    // Site load management: a site, its members, its state, its deletion.
    let site =
        Some(json!({"name": "Depot", "unit": "A", "limit": 40, "minPerCar": 8, "safeDefault": 6}));
    let (status, body) = call(s, c, "PUT", "/api/admin/sites/depot", a, site.clone()).await;
    assert_eq!(status, 201, "{body}");
    call(s, c, "PUT", "/api/admin/sites/depot", a, site).await; // 200
    call(
        s,
        c,
        "PUT",
        "/api/admin/sites/depot",
        a,
        Some(json!({"unit": "mA", "limit": 40})),
    )
    .await; // 400
    call(
        s,
        c,
        "PUT",
        "/api/admin/sites/depot/chargers",
        a,
        Some(json!({"chargerIds": []})),
    )
    .await;
    call(
        s,
        c,
        "PUT",
        "/api/admin/sites/depot/chargers",
        a,
        Some(json!({"chargerIds": ["nobody"]})),
    )
    .await; // 404
    call(s, c, "GET", "/api/admin/sites", a, None).await;
    call(s, c, "GET", "/api/admin/sites/depot", a, None).await;
    let (status, _) = call(s, c, "DELETE", "/api/admin/sites/depot", a, None).await;
    assert_eq!(status, 200);
    call(s, c, "GET", "/api/admin/sites/depot", a, None).await; // 404

    // The answers seen cover every operation with a JSON schema (not the
    // event streams, read by tests/operating.rs, nor this document).
    let not_json: BTreeSet<String> = c
        .templates
        .iter()
        .filter(|(m, p)| {
            let content = &c.doc["paths"][p][m]["responses"];
            !content
                .as_object()
                .unwrap()
                .iter()
                .filter(|(status, _)| status.starts_with('2'))
                .any(|(_, r)| r["content"]["application/json"].get("schema").is_some())
        })
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    let unseen: Vec<String> = c
        .templates
        .iter()
        .filter(|k| !c.seen.contains_key(*k))
        .map(|(m, p)| format!("{m} {p}"))
        .filter(|k| !not_json.contains(k))
        .collect();
    assert!(
        unseen.is_empty(),
        "JSON operations no answer was checked for: {unseen:?}"
    );
    let statuses: usize = c.seen.values().map(|s| s.len()).sum();
    assert!(
        statuses > 50,
        "only {statuses} (operation, status) pairs checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_page_is_served_from_the_binary() {
    let server = TestServer::start(Backend::Sqlite).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(server.http_url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/docs/");
    let page = client
        .get(server.http_url("/docs/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Every script and stylesheet the page loads is this server's own.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let url = &page[i + attr.len()..];
            let url = &url[..url.find('"').unwrap()];
            if url.starts_with("data:") {
                continue; // inline, fetched from nowhere
            }
            assert!(
                url.starts_with("/docs/"),
                "the page loads {url} from elsewhere"
            );
            let asset = client.get(server.http_url(url)).send().await.unwrap();
            assert_eq!(asset.status(), 200, "{url}");
            assert!(
                asset.bytes().await.unwrap().len() > 10_000,
                "{url} is not the asset"
            );
        }
    }
    assert!(page.contains("url: \"/api/openapi.json\""));
    assert!(
        page.contains("validatorUrl: null"),
        "no call to an online validator"
    );
}

/// Swagger UI in a real browser: it renders every operation of the
/// document from the binary's own assets with no error, and "Try it out"
/// calls the server and shows its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_renders_and_calls_the_server_in_a_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let server = TestServer::start(Backend::Sqlite).await;
    let operations = operations(&document(&server).await).len();
    let browser = driver.browser(1280, 900).await;
    browser
        .goto(&server.http_url("/docs/#/operating/health"))
        .await;
    let shown = eventually(
        "Swagger UI to render every operation",
        std::time::Duration::from_secs(20),
        || {
            let browser = &browser;
            async move {
                let n = browser.find_all(".opblock").await.len();
                (n >= operations).then_some(n)
            }
        },
    )
    .await;
    assert_eq!(shown, operations);
    // The deep link opened GET /health, ready to try (tryItOutEnabled):
    // call the server.
    browser.click("#operations-operating-health .execute").await;
    browser
        .wait_text(
            "#operations-operating-health .live-responses-table tr.response .response-col_status",
            std::time::Duration::from_secs(10),
            |t| t.trim() == "200",
        )
        .await;
    browser
        .screenshot(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/console-screenshots/api-reference.png"),
        )
        .await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the reference logged errors: {errors:?}");
    browser.close().await;
}
