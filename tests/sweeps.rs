//! The sweepers read only what is due: overdue remote starts, sessions whose
//! payment step is owed and that have been still for the grace period, and
//! pending links past their expiry. The times are compared in SQL, on both
//! databases; on SQLite they are text, so the rows here straddle the moment
//! asked about with every fraction length a time is written with (none, 3,
//! 6 and 9 digits; PostgreSQL keeps microseconds, so the nanoseconds here
//! never decide a comparison).

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use csms::store::{
    PaymentLinkRecord, SessionPayment, SessionRecord, SessionStart, Tariff, LINK_PENDING,
    SESSION_COMPLETED,
};

on_both_backends!(
    only_overdue_remote_starts_are_read,
    only_payments_due_for_the_grace_period_are_read,
    only_pending_links_past_their_expiry_are_read,
);

/// A whole second: its text has no fraction.
fn moment() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
}

fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

fn us(n: i64) -> Duration {
    Duration::microseconds(n)
}

fn ns(n: i64) -> Duration {
    Duration::nanoseconds(n)
}

/// An active app session of its own driver and connector.
fn session(n: usize) -> SessionRecord {
    SessionRecord::begin(SessionStart {
        user_id: format!("user-{n}"),
        station_id: "station".into(),
        station_name: "Station".into(),
        connector_id: format!("connector-{n}"),
        tariff: Tariff {
            price_micros: 165_000_000,
            currency: "NGN".into(),
        },
        battery_capacity_wh: 60_000,
        start_time: moment() - Duration::hours(1),
    })
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn only_overdue_remote_starts_are_read(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = csms::store::connect(&db.url).await.unwrap();
    // The sweep asks at `moment() + 500 µs` (six fraction digits).
    let now = moment() + us(500);
    let deadlines = [
        ("due, whole second", Some(moment())),
        ("due, 6 digits", Some(moment() + us(1))),
        ("due, 9 digits", Some(moment() + ns(499_001))),
        ("due, exactly now", Some(now)),
        ("not due, 3 digits", Some(moment() + ms(1))),
        ("not due, 9 digits", Some(moment() + ns(501_001))),
        (
            "not due, an hour ahead",
            Some(moment() + Duration::hours(1)),
        ),
        ("no remote start", None),
    ];
    let mut due = Vec::new();
    for (n, (what, deadline)) in deadlines.iter().enumerate() {
        let mut s = session(n);
        s.remote_start_deadline = *deadline;
        if what.starts_with("due") {
            due.push(s.id.clone());
        }
        store.create_session(s).await.unwrap().unwrap();
    }
    // Overdue but already bound to a transaction: not the sweeper's.
    let mut bound = session(100);
    bound.remote_start_deadline = Some(moment());
    bound.transaction_id = Some(7);
    store.create_session(bound).await.unwrap().unwrap();

    let found = store.overdue_remote_starts(now).await.unwrap();
    let found: Vec<String> = found.into_iter().map(|s| s.id).collect();
    assert_eq!(sorted(found), sorted(due.clone()));
    // An hour later every deadline but the last is past.
    let later = store
        .overdue_remote_starts(now + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(later.len(), due.len() + 3);
}

async fn only_payments_due_for_the_grace_period_are_read(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = csms::store::connect(&db.url).await.unwrap();
    // Sessions that ended (and last changed) at these times, payment owed.
    let unchanged_since = moment() + ms(1);
    let ended = [
        ("due", moment()),
        ("due", moment() + us(999)),
        ("due", unchanged_since),
        ("not yet", moment() + ms(1) + ns(1_001)),
        ("not yet", moment() + ms(2)),
    ];
    let mut due = Vec::new();
    for (n, (what, at)) in ended.iter().enumerate() {
        let mut s = session(n);
        store.create_session(s.clone()).await.unwrap().unwrap();
        store
            .attach_payment(
                &s.id,
                &SessionPayment {
                    wallet_address: Some("0xW".into()),
                    chain: Some("ledger-chain".into()),
                    balance_check_id: None,
                    payment_due: true,
                },
            )
            .await
            .unwrap();
        s.status = SESSION_COMPLETED.into();
        s.end_time = Some(*at);
        s.updated_at = *at;
        assert!(store.save_session(s.clone()).await.unwrap());
        if *what == "due" {
            due.push(s.id.clone());
        }
    }
    // Still active, or with nothing owed: never due.
    let active = session(50);
    store.create_session(active.clone()).await.unwrap().unwrap();
    store
        .attach_payment(
            &active.id,
            &SessionPayment {
                payment_due: true,
                ..SessionPayment::default()
            },
        )
        .await
        .unwrap();
    let mut settled = session(51);
    store
        .create_session(settled.clone())
        .await
        .unwrap()
        .unwrap();
    settled.status = SESSION_COMPLETED.into();
    settled.updated_at = moment();
    assert!(store.save_session(settled).await.unwrap());

    let found = store
        .sessions_with_payment_due(unchanged_since)
        .await
        .unwrap();
    assert_eq!(sorted(found), sorted(due));
    let all = store
        .sessions_with_payment_due(moment() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(all.len(), ended.len());
}

async fn only_pending_links_past_their_expiry_are_read(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = csms::store::connect(&db.url).await.unwrap();
    let now = moment() + ms(250);
    let expiries = [
        ("expired", moment()),
        ("expired", moment() + ms(249)),
        ("expired", now),
        ("valid", moment() + ms(250) + us(1)),
        ("valid", moment() + Duration::hours(24)),
    ];
    let mut expired = Vec::new();
    for (n, (what, expires_at)) in expiries.iter().enumerate() {
        let link = PaymentLinkRecord {
            id: format!("link-{n}"),
            session_id: format!("session-{n}"),
            user_id: format!("user-{n}"),
            provider: "local".into(),
            provider_ref: None,
            url: format!("http://localhost/pay/link-{n}"),
            amount_minor: 69_300,
            currency: "NGN".into(),
            status: LINK_PENDING.into(),
            metadata: serde_json::json!({}),
            expires_at: *expires_at,
            paid_at: None,
            created_at: moment() - Duration::hours(1),
            updated_at: moment() - Duration::hours(1),
        };
        store.create_payment_link(&link, None).await.unwrap();
        if *what == "expired" {
            expired.push(link.id);
        }
    }
    // Past its expiry but paid already: not pending.
    let paid = PaymentLinkRecord {
        id: "link-paid".into(),
        session_id: "session-paid".into(),
        user_id: "user-paid".into(),
        provider: "local".into(),
        provider_ref: None,
        url: "http://localhost/pay/link-paid".into(),
        amount_minor: 100,
        currency: "NGN".into(),
        status: LINK_PENDING.into(),
        metadata: serde_json::json!({}),
        expires_at: moment(),
        paid_at: None,
        created_at: moment() - Duration::hours(1),
        updated_at: moment() - Duration::hours(1),
    };
    store.create_payment_link(&paid, None).await.unwrap();
    assert!(store
        .set_link_status("link-paid", "paid", moment() - ms(1))
        .await
        .unwrap());

    let found: Vec<String> = store
        .pending_links_expired_by(now)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(sorted(found), sorted(expired));
}
