//! Local authorization lists kept by the server: enabled per charger after
//! GetConfiguration, sent in full, followed by differential updates as
//! idTags change, reconciled with GetLocalListVersion when a charger comes
//! back, bounded by the charger's length, and refusals that change nothing.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(
    a_local_list_follows_tag_changes_with_differential_updates,
    a_charger_that_comes_back_is_reconciled,
    a_list_is_bounded_by_the_chargers_length,
    chargers_without_local_lists_are_refused_and_errors_change_nothing,
);

fn configuration(enabled: &str, send_max: &str, list_max: &str) -> Value {
    json!({"configurationKey": [
        {"key": "LocalAuthListEnabled", "readonly": false, "value": enabled},
        {"key": "SendLocalListMaxLength", "readonly": true, "value": send_max},
        {"key": "LocalAuthListMaxLength", "readonly": true, "value": list_max},
    ]})
}

fn entry(tag: &str, status: &str) -> Value {
    json!({"idTag": tag, "idTagInfo": {"status": status}})
}

async fn list_state(server: &TestServer, admin: &str, charger: &str) -> Value {
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/admin/stations/{charger}/local-list"),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// Answers the next CALL, which must be SendLocalList; returns its payload.
async fn answer_list(charger: &mut TestCharger, answer: &str) -> Value {
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "SendLocalList", "{payload}");
    charger.reply(&id, json!({"status": answer})).await;
    payload
}

/// Enables the list while the test charger answers GetConfiguration with
/// `config` (and SendLocalList Accepted, when asked): (status, body, the
/// full list sent).
async fn enable(
    server: &TestServer,
    charger: &mut TestCharger,
    admin: &str,
    charger_id: &str,
    config: Value,
) -> (u16, Value, Option<Value>) {
    let url = server.http_url(&format!("/api/admin/stations/{charger_id}/local-list"));
    let admin = admin.to_owned();
    let pending = tokio::spawn(async move {
        let r = http()
            .put(url)
            .bearer_auth(admin)
            .json(&json!({"enabled": true}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "GetConfiguration");
    assert_eq!(
        payload,
        json!({"key": ["LocalAuthListEnabled", "SendLocalListMaxLength", "LocalAuthListMaxLength"]})
    );
    let takes_lists = config["configurationKey"][0]["value"]
        .as_str()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    charger.reply(&id, config).await;
    let sent = if takes_lists {
        Some(answer_list(charger, "Accepted").await)
    } else {
        None
    };
    let (status, body) = pending.await.unwrap();
    (status, body, sent)
}

async fn put_tag(server: &TestServer, admin: &str, tag: &str, body: Value) {
    let (status, answer) = server
        .api(
            "PUT",
            &format!("/api/admin/id-tags/{tag}"),
            Some(admin),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

async fn a_local_list_follows_tag_changes_with_differential_updates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-a", "TAG-A").await;
    server.user_with_tag("driver-b", "TAG-B").await;
    // A tag that belongs to nobody is not on the list.
    server.id_tag("LOOSE", None, "Accepted", None).await;
    let mut charger = server.booted_charger("CP-L1").await;

    let (status, body, full) = enable(
        &server,
        &mut charger,
        &admin,
        "CP-L1",
        configuration("true", "100", "200"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let full = full.unwrap();
    assert_eq!(full["listVersion"], 1);
    assert_eq!(full["updateType"], "Full");
    assert_eq!(
        full["localAuthorizationList"],
        json!([entry("TAG-A", "Accepted"), entry("TAG-B", "Accepted")])
    );
    let state = &body["data"];
    assert_eq!(state["enabled"], true);
    assert_eq!(state["version"], 1);
    assert_eq!(state["maxLength"], 100, "the smaller of the two lengths");
    assert_eq!(state["size"], 2);
    assert_eq!(state["syncState"], "synced");

    // Blocking a tag: a differential update with that tag only, version 2.
    put_tag(
        &server,
        &admin,
        "TAG-B",
        json!({"userId": "driver-b", "status": "Blocked"}),
    )
    .await;
    let update = answer_list(&mut charger, "Accepted").await;
    assert_eq!(
        update,
        json!({"listVersion": 2, "updateType": "Differential", "localAuthorizationList": [entry("TAG-B", "Blocked")]})
    );
    until("version 2 kept", Duration::from_secs(5), || async {
        list_state(&server, &admin, "CP-L1").await["version"] == 2
    })
    .await;

    // A new tag, then an expiry: each its own update.
    put_tag(&server, &admin, "TAG-C", json!({"userId": "driver-a"})).await;
    let update = answer_list(&mut charger, "Accepted").await;
    assert_eq!(update["listVersion"], 3);
    assert_eq!(update["updateType"], "Differential");
    assert_eq!(
        update["localAuthorizationList"],
        json!([entry("TAG-C", "Accepted")])
    );
    put_tag(
        &server,
        &admin,
        "TAG-A",
        json!({"userId": "driver-a", "expiryDate": "2030-01-01T00:00:00Z"}),
    )
    .await;
    let update = answer_list(&mut charger, "Accepted").await;
    assert_eq!(update["listVersion"], 4);
    assert_eq!(
        update["localAuthorizationList"],
        json!([{"idTag": "TAG-A", "idTagInfo": {"status": "Accepted", "expiryDate": "2030-01-01T00:00:00.000Z"}}])
    );

    // A charger whose version does not match the update's base gets the
    // full list instead.
    put_tag(
        &server,
        &admin,
        "TAG-C",
        json!({"userId": "driver-a", "status": "Blocked"}),
    )
    .await;
    let update = answer_list(&mut charger, "VersionMismatch").await;
    assert_eq!(update["updateType"], "Differential");
    let full = answer_list(&mut charger, "Accepted").await;
    assert_eq!(full["updateType"], "Full");
    assert_eq!(full["listVersion"], 5);
    assert_eq!(full["localAuthorizationList"].as_array().unwrap().len(), 3);
    let state = eventually("version 5 kept", Duration::from_secs(5), || {
        let (server, admin) = (&server, &admin);
        async move {
            let s = list_state(server, admin, "CP-L1").await;
            (s["version"] == 5).then_some(s)
        }
    })
    .await;
    assert_eq!(state["syncState"], "synced");
    assert_eq!(state["size"], 3);

    // A change the charger fails to take is shown as such.
    put_tag(&server, &admin, "TAG-C", json!({"userId": "driver-a"})).await;
    answer_list(&mut charger, "Failed").await;
    let state = eventually("the failure kept", Duration::from_secs(5), || {
        let (server, admin) = (&server, &admin);
        async move {
            let s = list_state(server, admin, "CP-L1").await;
            (s["syncState"] == "failed").then_some(s)
        }
    })
    .await;
    assert_eq!(state["version"], 5, "the version the charger confirmed");
    let (_, all) = server
        .api("GET", "/api/admin/local-lists", Some(&admin), None)
        .await;
    assert_eq!(all["pagination"]["total"], 1);
    assert_eq!(all["data"][0]["chargerId"], "CP-L1");
    server.stop().await;
}

async fn a_charger_that_comes_back_is_reconciled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-a", "TAG-A").await;
    let mut charger = server.booted_charger("CP-L2").await;
    let (status, body, _) = enable(
        &server,
        &mut charger,
        &admin,
        "CP-L2",
        configuration("true", "50", "50"),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A tag changes while the charger is away: kept pending.
    charger.close().await;
    until("CP-L2 offline", Duration::from_secs(5), || async {
        !server.state.registry.is_connected("CP-L2")
    })
    .await;
    put_tag(&server, &admin, "TAG-N", json!({"userId": "driver-a"})).await;
    until("the list pending", Duration::from_secs(5), || async {
        list_state(&server, &admin, "CP-L2").await["syncState"] == "pending"
    })
    .await;

    // Back after a reboot: asked its version after the boot answer; it
    // holds version 1, so it gets what changed.
    let mut charger = TestCharger::connect(&server.ws_url("CP-L2")).await;
    assert_eq!(charger.boot().await["status"], "Accepted");
    let (id, action, _) = charger.expect_call().await;
    assert_eq!(action, "GetLocalListVersion");
    charger.reply(&id, json!({"listVersion": 1})).await;
    let update = answer_list(&mut charger, "Accepted").await;
    assert_eq!(
        update,
        json!({"listVersion": 2, "updateType": "Differential", "localAuthorizationList": [entry("TAG-N", "Accepted")]})
    );
    until("synced at version 2", Duration::from_secs(5), || async {
        let s = list_state(&server, &admin, "CP-L2").await;
        s["version"] == 2 && s["syncState"] == "synced"
    })
    .await;

    // Back without a list (a factory reset): the full list.
    charger.close().await;
    let mut charger = TestCharger::connect(&server.ws_url("CP-L2")).await;
    assert_eq!(charger.boot().await["status"], "Accepted");
    let (id, action, _) = charger.expect_call().await;
    assert_eq!(action, "GetLocalListVersion");
    charger.reply(&id, json!({"listVersion": 0})).await;
    let full = answer_list(&mut charger, "Accepted").await;
    assert_eq!(full["updateType"], "Full");
    assert_eq!(full["listVersion"], 3);
    assert_eq!(
        full["localAuthorizationList"],
        json!([entry("TAG-A", "Accepted"), entry("TAG-N", "Accepted")])
    );

    // Back without booting, holding the list kept: asked, nothing more sent.
    charger.close().await;
    let mut charger = TestCharger::connect(&server.ws_url("CP-L2")).await;
    let (id, action, _) = charger.expect_call().await;
    assert_eq!(action, "GetLocalListVersion");
    charger.reply(&id, json!({"listVersion": 3})).await;
    assert!(charger
        .try_next_frame(Duration::from_millis(500))
        .await
        .is_none());
    let state = list_state(&server, &admin, "CP-L2").await;
    assert_eq!(state["version"], 3);
    assert_eq!(state["syncState"], "synced");
    server.stop().await;
}

async fn a_list_is_bounded_by_the_chargers_length(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    for tag in ["TAG-3", "tag-1", "TAG-2"] {
        server.user_with_tag(&format!("driver-{tag}"), tag).await;
    }
    let mut charger = server.booted_charger("CP-L3").await;
    let (status, body, full) = enable(
        &server,
        &mut charger,
        &admin,
        "CP-L3",
        configuration("TRUE", "2", "10"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The first two in tag order (case-insensitive), as entered.
    assert_eq!(
        full.unwrap()["localAuthorizationList"],
        json!([entry("tag-1", "Accepted"), entry("TAG-2", "Accepted")])
    );
    assert_eq!(body["data"]["maxLength"], 2);
    server.stop().await;
}

async fn chargers_without_local_lists_are_refused_and_errors_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-a", "TAG-A").await;
    let mut charger = server.booted_charger("CP-L4").await;

    let (status, body, _) = enable(
        &server,
        &mut charger,
        &admin,
        "CP-L4",
        configuration("false", "10", "10"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "LOCAL_LIST_NOT_SUPPORTED");
    let state = list_state(&server, &admin, "CP-L4").await;
    assert_eq!(state["enabled"], false);
    assert_eq!(state["syncState"], "not_supported");
    // Not enabled: tag changes send it nothing.
    put_tag(&server, &admin, "TAG-B", json!({"userId": "driver-a"})).await;
    assert!(charger
        .try_next_frame(Duration::from_millis(500))
        .await
        .is_none());

    let put = |charger: &str, body: Value| {
        let (server, admin) = (&server, &admin);
        let path = format!("/api/admin/stations/{charger}/local-list");
        async move { server.api("PUT", &path, Some(admin), Some(body)).await }
    };
    let (status, body) = put("CP-L4", json!({"enabled": "yes"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["details"]["field"], "enabled");
    let (status, body) = put("CP-L4", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["details"]["field"], "enabled");
    let (status, _) = put("CP-NOBODY", json!({"enabled": true})).await;
    assert_eq!(status, 404);
    let (_, driver) = server.register("dee@example.com").await;
    let (status, _) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-L4/local-list",
            Some(&driver),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 403);
    assert!(charger
        .try_next_frame(Duration::from_millis(300))
        .await
        .is_none());

    charger.close().await;
    until("CP-L4 offline", Duration::from_secs(5), || async {
        !server.state.registry.is_connected("CP-L4")
    })
    .await;
    let (status, body) = put("CP-L4", json!({"enabled": true})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CHARGER_OFFLINE");
    assert_eq!(
        list_state(&server, &admin, "CP-L4").await["syncState"],
        "not_supported"
    );
    server.stop().await;
}
