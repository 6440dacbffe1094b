//! The SDK's offline API, with no server: every request fails at the
//! transport, so everything here is the local store, the outbox and the
//! local view.

use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pufa_client::transport::{Request, Response, Transport, TransportError};
use pufa_client::{
    Client, ClientConfig, DeviceClock, Error, Filter, LocalRecord, RetryPolicy, SyncState,
};
use pufa_core::date::Date;
use pufa_core::kinds::{DemoSite, Lecture, LegalUnderstander, LibraryCorner, Location, RecordKind};
use pufa_core::schema::{Kind, RejectCode};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// 2020-07-01T00:00:00Z.
const T0: u64 = 1_593_561_600_000;

/// A device clock stopped at [`T0`].
struct Fixed;

impl DeviceClock for Fixed {
    fn now_ms(&self) -> u64 {
        T0
    }
}

/// A network that never answers; counts the attempts.
#[derive(Default)]
struct NoNetwork {
    calls: AtomicU64,
}

#[async_trait]
impl Transport for NoNetwork {
    async fn send(&self, _req: Request) -> Result<Response, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(TransportError("no network".into()))
    }
}

fn device() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
}

fn open_as(dir: &Path, id: Uuid, transport: Arc<NoNetwork>) -> Result<Client, Error> {
    let mut config = ClientConfig::new(dir, id, "token-of-a-field-device");
    config.clock = Arc::new(Fixed);
    config.retry = RetryPolicy {
        attempts: 2,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        seed: 0,
    };
    Client::open(config, transport)
}

fn open(dir: &Path) -> Client {
    open_as(dir, device(), Arc::new(NoNetwork::default())).expect("the store opens")
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn lecture(org: &str, held_on: &str, title: &str, attendees: u64) -> Map<String, Value> {
    map(json!({"org_unit": org, "held_on": held_on, "title": title, "attendees": attendees}))
}

fn corner(org: &str, name: &str, opened_on: &str) -> Map<String, Value> {
    map(json!({"org_unit": org, "name": name, "status": "active", "opened_on": opened_on}))
}

fn typed_lecture() -> Lecture {
    Lecture {
        org_unit: "140106001001".into(),
        held_on: "2020-06-28".into(),
        title: "民法典进社区".into(),
        attendees: 87,
        topics: vec!["民法典".into(), "婚姻家庭".into()],
        speaker: Some("王律师".into()),
        venue: Some("社区活动中心".into()),
        audience: Some("residents".into()),
        notes: None,
        location: Some(Location {
            lat: 37.86,
            lon: 112.55,
        }),
    }
}

#[track_caller]
fn assert_invalid<T: Debug>(result: Result<T, Error>, code: RejectCode, field: &str) {
    match result {
        Err(Error::Invalid(r)) => {
            assert_eq!(r.code, code, "{r:?}");
            assert_eq!(r.field.as_deref(), Some(field), "{r:?}");
            assert!(!r.message.is_empty());
        }
        other => panic!(
            "expected Invalid({}) on {field}, got {other:?}",
            code.as_str()
        ),
    }
}

fn ids(records: &[LocalRecord]) -> Vec<Uuid> {
    records.iter().map(|r| r.id).collect()
}

fn all(client: &Client) -> Vec<LocalRecord> {
    client.list(&Filter::default()).unwrap()
}

fn date(s: &str) -> Option<Date> {
    Some(Date::parse(s).expect("a real date"))
}

#[test]
fn created_records_are_visible_at_once_and_pending() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    assert_eq!(client.device_id(), device());

    let typed = client.create(&typed_lecture()).unwrap();
    let fields = corner("140106001002", "法治图书角", "2019-03-15");
    let from_map = client
        .create_fields(Kind::LibraryCorner, fields.clone())
        .unwrap();
    assert_eq!(typed.get_version_num(), 7);
    assert_eq!(from_map.get_version_num(), 7);
    assert!(typed < from_map, "v7 ids follow creation order");

    let r = client.get(typed).unwrap().expect("visible before any sync");
    assert_eq!(r.id, typed);
    assert_eq!(r.kind, Kind::Lecture);
    assert_eq!(r.state, SyncState::Pending);
    assert_eq!(r.seq, 0);
    assert!(!r.deleted);
    assert_eq!(r.fields, typed_lecture().to_fields());
    assert!(
        !r.fields.contains_key("notes"),
        "absent optionals are left out"
    );
    assert_eq!(r.org_unit(), Some("140106001001"));
    assert_eq!(r.date(), date("2020-06-28"));

    let c = client.get(from_map).unwrap().unwrap();
    assert_eq!(c.kind, Kind::LibraryCorner);
    assert_eq!(c.fields, fields);
    assert_eq!(c.state, SyncState::Pending);
    assert_eq!(c.date(), date("2019-03-15"));

    let listed = all(&client);
    assert_eq!(ids(&listed), vec![typed, from_map]);
    assert!(listed.iter().all(|r| r.state == SyncState::Pending));
    assert_eq!(client.get(Uuid::now_v7()).unwrap(), None);

    let s = client.status().unwrap();
    assert_eq!(s.device_id, device());
    assert_eq!(s.pending, 2);
    assert_eq!(s.rejected, 0);
    assert_eq!(s.oldest_pending_ms, Some(T0));
    assert_eq!(s.last_sync_ms, None);
    assert_eq!(s.cursor, 0);
    assert_eq!(s.store_id, None);
    assert_eq!(s.clock_offset_ms, 0);
    assert_eq!(s.lost_on_server, 0);
    assert!(client.rejected().unwrap().is_empty());
}

#[test]
fn invalid_edits_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());

    let mut unknown = lecture("c11", "2020-06-01", "宪法宣传", 30);
    unknown.insert("colour".into(), json!("red"));
    assert_invalid(
        client.create_fields(Kind::Lecture, unknown),
        RejectCode::UnknownField,
        "colour",
    );
    let mut fractional = lecture("c11", "2020-06-01", "宪法宣传", 30);
    fractional.insert("attendees".into(), json!(30.0));
    assert_invalid(
        client.create_fields(Kind::Lecture, fractional),
        RejectCode::InvalidField,
        "attendees",
    );
    assert_invalid(
        client.create_fields(Kind::Lecture, lecture("c11", "2020-02-30", "宪法宣传", 30)),
        RejectCode::InvalidField,
        "held_on",
    );
    // The device's date is 2020-07-01: held_on may name up to 366 days later.
    assert_invalid(
        client.create_fields(Kind::Lecture, lecture("c11", "2021-07-03", "宪法宣传", 30)),
        RejectCode::InvalidField,
        "held_on",
    );
    assert_invalid(
        client.create_fields(Kind::Lecture, lecture("", "2020-06-01", "宪法宣传", 30)),
        RejectCode::InvalidField,
        "org_unit",
    );
    let mut no_attendees = lecture("c11", "2020-06-01", "宪法宣传", 30);
    no_attendees.remove("attendees");
    assert_invalid(
        client.create_fields(Kind::Lecture, no_attendees),
        RejectCode::MissingField,
        "attendees",
    );
    assert_invalid(
        client.create(&Lecture {
            title: String::new(),
            ..typed_lecture()
        }),
        RejectCode::InvalidField,
        "title",
    );
    assert_invalid(
        client.create(&DemoSite {
            org_unit: "c21".into(),
            level: "county".into(),
            status: "awarded".into(),
            year: 2020,
            notes: None,
        }),
        RejectCode::InvalidField,
        "level",
    );
    assert_invalid(
        client.create(&LibraryCorner {
            org_unit: "c12".into(),
            name: "图书角".into(),
            status: "open".into(),
            ..LibraryCorner::default()
        }),
        RejectCode::InvalidField,
        "status",
    );
    assert!(all(&client).is_empty());
    assert_eq!(client.status().unwrap().pending, 0);

    // A batch with one bad record records none of it.
    let batch = vec![
        (Kind::Lecture, lecture("c11", "2020-06-01", "一", 1)),
        (Kind::Lecture, lecture("c11", "2020-06-01", "", 1)),
    ];
    assert_invalid(client.create_many(batch), RejectCode::InvalidField, "title");
    assert!(all(&client).is_empty());

    // The last valid day is fine.
    let id = client
        .create_fields(Kind::Lecture, lecture("c11", "2021-07-02", "宪法宣传", 30))
        .unwrap();
    let before = client.get(id).unwrap().unwrap();
    assert_invalid(
        client.update(id, map(json!({"title": null}))),
        RejectCode::MissingField,
        "title",
    );
    assert_invalid(
        client.update(id, map(json!({"attendees": 100_001}))),
        RejectCode::InvalidField,
        "attendees",
    );
    assert_invalid(
        client.update(id, map(json!({"room": "2F"}))),
        RejectCode::UnknownField,
        "room",
    );
    assert_invalid(
        client.update(id, map(json!({"audience": "aliens"}))),
        RejectCode::InvalidField,
        "audience",
    );
    assert_eq!(client.get(id).unwrap().unwrap(), before);
    assert_eq!(client.status().unwrap().pending, 1);

    let missing = Uuid::now_v7();
    assert!(matches!(
        client.update(missing, map(json!({"title": "x"}))),
        Err(Error::NotFound(i)) if i == missing
    ));
    assert!(matches!(client.delete(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.restore(missing), Err(Error::NotFound(_))));
    assert!(matches!(client.discard(missing), Err(Error::NotFound(_))));
    assert!(matches!(
        client.resubmit(missing, None),
        Err(Error::NotFound(_))
    ));
    assert_eq!(client.status().unwrap().pending, 1);
}

#[test]
fn updates_merge_and_null_clears_optional_fields() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    let id = client.create(&typed_lecture()).unwrap();

    client
        .update(id, map(json!({"attendees": 90, "speaker": null})))
        .unwrap();
    let r = client.get(id).unwrap().unwrap();
    assert_eq!(r.fields["attendees"], json!(90));
    assert!(!r.fields.contains_key("speaker"));
    assert_eq!(r.fields["title"], json!("民法典进社区"));
    assert_eq!(r.fields["venue"], json!("社区活动中心"));
    assert_eq!(r.state, SyncState::Pending);

    client
        .update(id, map(json!({"notes": "雨天，改在室内", "topics": null})))
        .unwrap();
    client
        .update(id, map(json!({"speaker": "李法官"})))
        .unwrap();
    let got: Lecture = client.get_as(id).unwrap();
    assert_eq!(
        got,
        Lecture {
            attendees: 90,
            topics: Vec::new(),
            speaker: Some("李法官".into()),
            notes: Some("雨天，改在室内".into()),
            ..typed_lecture()
        }
    );
    // An empty update is an edit like any other.
    client.update(id, Map::new()).unwrap();
    assert_eq!(client.status().unwrap().pending, 5);
}

#[test]
fn delete_and_restore_toggle_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    let keep = client
        .create_fields(Kind::Lecture, lecture("c11", "2020-06-01", "一", 10))
        .unwrap();
    let gone = client
        .create_fields(Kind::Lecture, lecture("c11", "2020-06-02", "二", 20))
        .unwrap();

    client.delete(gone).unwrap();
    let r = client.get(gone).unwrap().expect("deleted records stay");
    assert!(r.deleted);
    assert_eq!(r.fields["title"], json!("二"));
    assert_eq!(r.state, SyncState::Pending);
    assert_eq!(ids(&all(&client)), vec![keep]);
    let with_deleted = Filter {
        include_deleted: true,
        ..Filter::default()
    };
    assert_eq!(ids(&client.list(&with_deleted).unwrap()), vec![keep, gone]);

    // A deleted record can still be edited and is restored as edited.
    client.update(gone, map(json!({"attendees": 21}))).unwrap();
    client.restore(gone).unwrap();
    let r = client.get(gone).unwrap().unwrap();
    assert!(!r.deleted);
    assert_eq!(r.fields["attendees"], json!(21));
    assert_eq!(ids(&all(&client)), vec![keep, gone]);

    client.delete(gone).unwrap();
    client.delete(gone).unwrap();
    assert!(client.get(gone).unwrap().unwrap().deleted);
    assert_eq!(client.status().unwrap().pending, 7);
}

#[test]
fn list_filters_by_kind_unit_and_dates() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    let l1 = client
        .create_fields(Kind::Lecture, lecture("c11", "2020-01-15", "一", 10))
        .unwrap();
    let l2 = client
        .create_fields(Kind::Lecture, lecture("c12", "2020-03-01", "二", 20))
        .unwrap();
    let l3 = client
        .create_fields(Kind::Lecture, lecture("c11", "2020-06-30", "三", 30))
        .unwrap();
    let k1 = client
        .create_fields(Kind::LibraryCorner, corner("c11", "图书角", "2020-02-01"))
        .unwrap();
    let s1 = client
        .create(&DemoSite {
            org_unit: "c11".into(),
            level: "provincial".into(),
            status: "awarded".into(),
            year: 2019,
            notes: None,
        })
        .unwrap();
    let l4 = client
        .create_fields(Kind::Lecture, lecture("s1", "2020-03-01", "四", 40))
        .unwrap();

    let list = |f: Filter| ids(&client.list(&f).unwrap());
    assert_eq!(list(Filter::default()), vec![l1, l2, l3, k1, s1, l4]);
    assert_eq!(
        list(Filter {
            kind: Some(Kind::Lecture),
            ..Filter::default()
        }),
        vec![l1, l2, l3, l4]
    );
    assert_eq!(
        list(Filter {
            kind: Some(Kind::DemoSite),
            ..Filter::default()
        }),
        vec![s1]
    );
    // No org tree cached yet (no sync): the exact unit, not its subtree.
    assert_eq!(
        list(Filter {
            org_unit: Some("c11".into()),
            ..Filter::default()
        }),
        vec![l1, l3, k1, s1]
    );
    assert_eq!(
        list(Filter {
            org_unit: Some("s1".into()),
            ..Filter::default()
        }),
        vec![l4]
    );
    assert!(list(Filter {
        org_unit: Some("nowhere".into()),
        ..Filter::default()
    })
    .is_empty());
    // Inclusive bounds, on held_on (lectures) and opened_on (corners); a
    // record without a date never matches a range.
    assert_eq!(
        list(Filter {
            from: date("2020-02-01"),
            to: date("2020-03-01"),
            ..Filter::default()
        }),
        vec![l2, k1, l4]
    );
    assert_eq!(
        list(Filter {
            from: date("2020-03-02"),
            ..Filter::default()
        }),
        vec![l3]
    );
    assert_eq!(
        list(Filter {
            to: date("2020-01-15"),
            ..Filter::default()
        }),
        vec![l1]
    );
    assert_eq!(
        list(Filter {
            kind: Some(Kind::Lecture),
            org_unit: Some("c11".into()),
            from: date("2020-01-16"),
            to: date("2020-12-31"),
            include_deleted: false,
        }),
        vec![l3]
    );
    // Filters see the local view: an edit moves a record between results.
    client
        .update(l3, map(json!({"held_on": "2020-02-15", "org_unit": "c12"})))
        .unwrap();
    assert_eq!(
        list(Filter {
            org_unit: Some("c12".into()),
            to: date("2020-02-28"),
            ..Filter::default()
        }),
        vec![l3]
    );
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(NoNetwork::default());
    let client = open_as(dir.path(), device(), transport.clone()).unwrap();
    let a = client.create(&typed_lecture()).unwrap();
    let b = client
        .create_fields(Kind::LibraryCorner, corner("c12", "图书角", "2018-09-01"))
        .unwrap();
    let c = client
        .create_fields(Kind::Lecture, lecture("c21", "2020-05-04", "青年普法", 55))
        .unwrap();
    client
        .update(a, map(json!({"attendees": 88, "venue": null})))
        .unwrap();
    client.delete(b).unwrap();
    client
        .update(c, map(json!({"audience": "students"})))
        .unwrap();
    client.delete(c).unwrap();
    client.restore(c).unwrap();
    let edits = 8;
    let everything = Filter {
        include_deleted: true,
        ..Filter::default()
    };
    let before = client.list(&everything).unwrap();
    let status = client.status().unwrap();
    assert_eq!(status.pending, edits);
    assert_eq!(ids(&before), vec![a, b, c]);

    let clone = client.clone();
    drop(client);
    drop(clone);
    let client = open_as(dir.path(), device(), transport).unwrap();
    let after = client.list(&everything).unwrap();
    assert_eq!(after, before);
    assert_eq!(client.status().unwrap(), status);
    assert_eq!(client.status().unwrap().pending, edits);
    assert!(client.get(b).unwrap().unwrap().deleted);
    assert_eq!(
        client.get(a).unwrap().unwrap().fields["attendees"],
        json!(88)
    );

    // New edits continue the outbox after the old ones.
    let d = client
        .create_fields(Kind::Lecture, lecture("c21", "2020-06-01", "新", 1))
        .unwrap();
    assert_eq!(client.status().unwrap().pending, edits + 1);
    assert_eq!(ids(&client.list(&everything).unwrap()), vec![a, b, c, d]);
    client.update(a, map(json!({"attendees": 89}))).unwrap();
    assert_eq!(
        client.get(a).unwrap().unwrap().fields["attendees"],
        json!(89)
    );
}

#[test]
fn a_store_belongs_to_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    let id = client.create(&typed_lecture()).unwrap();
    drop(client);

    let other = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
    match open_as(dir.path(), other, Arc::new(NoNetwork::default())) {
        Err(Error::WrongDevice { stored, given }) => {
            assert_eq!(stored, device());
            assert_eq!(given, other);
        }
        Err(e) => panic!("expected WrongDevice, got {e}"),
        Ok(_) => panic!("expected WrongDevice, the store opened"),
    }
    // The refusal changed nothing, and the store still opens for its device.
    let client = open(dir.path());
    assert_eq!(ids(&all(&client)), vec![id]);
    assert_eq!(client.status().unwrap().pending, 1);
}

#[tokio::test]
async fn sync_without_a_network_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(NoNetwork::default());
    let client = open_as(dir.path(), device(), transport.clone()).unwrap();

    // Empty outbox: the first request fails after the policy's 2 attempts.
    let err = client.sync().await.unwrap_err();
    assert!(
        matches!(&err, Error::Unreachable(m) if m.contains("no network")),
        "{err}"
    );
    assert_eq!(transport.calls.load(Ordering::SeqCst), 2);

    let a = client.create(&typed_lecture()).unwrap();
    let b = client
        .create_fields(Kind::Lecture, lecture("c11", "2020-06-01", "一", 10))
        .unwrap();
    client.update(a, map(json!({"attendees": 99}))).unwrap();
    client.delete(b).unwrap();
    let everything = Filter {
        include_deleted: true,
        ..Filter::default()
    };
    let records = client.list(&everything).unwrap();
    let status = client.status().unwrap();
    assert_eq!(status.pending, 4);

    let seen = std::sync::Mutex::new(Vec::new());
    let err = client
        .sync_with_progress(|p| seen.lock().unwrap().push(p))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err}");
    assert_eq!(transport.calls.load(Ordering::SeqCst), 4);
    assert!(seen.lock().unwrap().is_empty(), "nothing was pushed");
    let err = client.sync().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err}");

    assert_eq!(client.status().unwrap(), status);
    assert_eq!(client.list(&everything).unwrap(), records);
    assert!(client
        .list(&everything)
        .unwrap()
        .iter()
        .all(|r| r.state == SyncState::Pending && r.seq == 0));
    assert!(client.rejected().unwrap().is_empty());

    // Still nothing lost after a restart.
    drop(client);
    let client = open_as(dir.path(), device(), transport).unwrap();
    assert_eq!(client.status().unwrap(), status);
    assert_eq!(client.list(&everything).unwrap(), records);
}

#[test]
fn ten_thousand_lectures_in_one_write() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    let batch: Vec<(Kind, Map<String, Value>)> = (0..N)
        .map(|i| {
            let org = format!("1401060010{:02}", i % 40);
            let day = format!("2020-{:02}-{:02}", 1 + i % 6, 1 + i % 28);
            (
                Kind::Lecture,
                lecture(&org, &day, &format!("法律讲座 #{i}"), (i % 300) as u64),
            )
        })
        .collect();

    let started = Instant::now();
    let ids_made = client.create_many(batch).unwrap();
    let created = started.elapsed();
    assert_eq!(ids_made.len(), N);
    assert!(ids_made.windows(2).all(|w| w[0] < w[1]), "creation order");
    assert!(ids_made.iter().all(|id| id.get_version_num() == 7));
    assert_eq!(client.status().unwrap().pending, N as u64);
    drop(client);

    let started = Instant::now();
    let client = open(dir.path());
    let listed = all(&client);
    let reopened = started.elapsed();
    eprintln!("create_many({N}): {created:?}; reopen + list: {reopened:?}");

    assert_eq!(client.status().unwrap().pending, N as u64);
    assert_eq!(ids(&listed), ids_made);
    assert_eq!(listed[1234].fields["title"], json!("法律讲座 #1234"));
    assert_eq!(listed[1234].fields["org_unit"], json!("140106001034"));
    assert!(listed.iter().all(|r| r.state == SyncState::Pending));
    let one_unit = client
        .list(&Filter {
            org_unit: Some("140106001007".into()),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(one_unit.len(), N / 40);
}

#[test]
fn typed_reads_round_trip_and_check_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    let typed = typed_lecture();
    let id = client.create(&typed).unwrap();
    assert_eq!(client.get_as::<Lecture>(id).unwrap(), typed);

    let site = DemoSite {
        org_unit: "c21".into(),
        level: "municipal".into(),
        status: "candidate".into(),
        year: 2020,
        notes: Some("候选".into()),
    };
    let site_id = client.create(&site).unwrap();
    assert_eq!(client.get_as::<DemoSite>(site_id).unwrap(), site);

    let corner = LibraryCorner {
        org_unit: "c12".into(),
        name: "法治图书角".into(),
        status: "inactive".into(),
        books: Some(320),
        opened_on: Some("2018-05-20".into()),
        ..LibraryCorner::default()
    };
    let corner_id = client.create(&corner).unwrap();
    assert_eq!(client.get_as::<LibraryCorner>(corner_id).unwrap(), corner);

    let person = LegalUnderstander {
        org_unit: "c12".into(),
        name: "王某某".into(),
        appointed_on: "2020-06-01".into(),
        status: "serving".into(),
        training_hours: Some(16),
        phone: Some("0351-5550001".into()),
        notes: None,
    };
    let person_id = client.create(&person).unwrap();
    assert_eq!(
        client.get_as::<LegalUnderstander>(person_id).unwrap(),
        person
    );
    assert_invalid(
        client.get_as::<LegalUnderstander>(corner_id),
        RejectCode::KindMismatch,
        "kind",
    );
    // Judged offline by the kind's rules, as the server would.
    assert_invalid(
        client.create(&LegalUnderstander {
            phone: Some("电话".into()),
            ..person.clone()
        }),
        RejectCode::InvalidField,
        "phone",
    );

    assert_invalid(
        client.get_as::<LibraryCorner>(id),
        RejectCode::KindMismatch,
        "kind",
    );
    assert_invalid(
        client.get_as::<Lecture>(site_id),
        RejectCode::KindMismatch,
        "kind",
    );
    let missing = Uuid::now_v7();
    assert!(matches!(
        client.get_as::<Lecture>(missing),
        Err(Error::NotFound(i)) if i == missing
    ));

    // A record made from a field map reads back as a struct, and edits show.
    let from_map = client
        .create_fields(Kind::Lecture, lecture("c11", "2020-06-01", "一", 10))
        .unwrap();
    client
        .update(
            from_map,
            map(json!({"topics": ["宪法"], "audience": "mixed"})),
        )
        .unwrap();
    let got: Lecture = client.get_as(from_map).unwrap();
    assert_eq!(got.topics, vec!["宪法".to_string()]);
    assert_eq!(got.audience.as_deref(), Some("mixed"));
    assert_eq!(got.speaker, None);
}

#[test]
fn clones_share_one_outbox_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    let made: Vec<Uuid> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let c = client.clone();
                s.spawn(move || {
                    (0..50)
                        .map(|i| {
                            let title = format!("线程 {t} 第 {i} 场");
                            let id = c
                                .create_fields(
                                    Kind::Lecture,
                                    lecture("c11", "2020-06-01", &title, i),
                                )
                                .unwrap();
                            c.update(id, map(json!({"attendees": i + 1}))).unwrap();
                            id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(client.status().unwrap().pending, 400);
    let mut sorted = made.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 200);
    let listed = all(&client);
    assert_eq!(ids(&listed), sorted);
    assert!(listed
        .iter()
        .all(|r| r.fields["attendees"].as_u64().is_some_and(|n| n >= 1)));
}

#[test]
fn an_empty_import_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    assert!(client.create_many(Vec::new()).unwrap().is_empty());
    assert_eq!(client.status().unwrap().pending, 0);
    assert!(all(&client).is_empty());
}

#[test]
fn an_open_store_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path());
    let id = client.create(&typed_lecture()).unwrap();
    match open_as(dir.path(), device(), Arc::new(NoNetwork::default())) {
        Err(Error::Store(why)) => eprintln!("second open refused: {why}"),
        Err(e) => panic!("expected Error::Store, got {e}"),
        Ok(_) => panic!("the same store opened twice"),
    }
    // The first handle is unharmed.
    client.update(id, map(json!({"attendees": 1}))).unwrap();
    assert_eq!(client.status().unwrap().pending, 2);
}
