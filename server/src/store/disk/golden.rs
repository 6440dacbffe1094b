//! Golden bytes: the exact encoding of one example of every stored type.
//!
//! A change to a wire or core type must never reach the disk; a change to a
//! storage type must be a new store format with an upgrade. Either shows up
//! here as bytes that differ from the pinned ones. The bytes were written by
//! the store format 5 encoders, before the storage types existed, so they
//! also prove that the storage types read what older servers wrote.

use std::collections::BTreeMap;

use pufa_core::audit::Change;
use pufa_core::hlc::Hlc;
use pufa_core::merge::{Conflict, RecordState, Register};
use pufa_core::schema::Kind;
use pufa_core::totals::{AggKey, AggValue, UnitAgg};
use pufa_core::wire::{
    AuditCause, ConflictReport, DeviceReport, ErrorObject, OrgUnit, Role, UnitType,
};
use serde_json::json;
use uuid::Uuid;

use crate::store::codec::{
    self, decode, encode, Applied, AuditBody, PeriodStep, StoredConflict, StoredRejection,
};
use crate::store::disk::Persist;
use crate::store::{Account, Device, EnrolmentCode, Session};
use crate::store::{StoredDismissal, StoredPeriod};
use pufa_core::period::{Approval, Period, PeriodAction, PeriodState};

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0000 | n)
}

fn hlc(ms: u64, c: u32, node: u128) -> Hlc {
    Hlc::new(ms, c, id(node))
}

fn device() -> Device {
    Device {
        id: id(1),
        role: Role::Field,
        org_unit: Some("140106001".into()),
        label: "王芳的手机".into(),
        revoked: false,
        token_hash: [7; 32],
        created_ms: 1_600_000_000_000,
        last_push_ms: Some(1_600_000_100_000),
        report: Some(DeviceReport {
            app_version: Some("pufa-web/0.1.0".into()),
            outbox_len: Some(3),
            oldest_pending_ms: Some(1_600_000_050_000),
            now_ms: Some(1_600_000_099_000),
        }),
        clock_skew_ms: Some(-1_000),
    }
}

fn bootstrap_admin() -> Device {
    Device {
        id: id(2),
        role: Role::Admin,
        org_unit: None,
        label: "admin".into(),
        revoked: true,
        token_hash: [0; 32],
        created_ms: 1,
        last_push_ms: None,
        report: None,
        clock_skew_ms: None,
    }
}

fn account() -> Account {
    Account {
        id: id(3),
        username: "zhang.wei".into(),
        display_name: Some("张伟".into()),
        role: Role::Coordinator,
        org_unit: Some("140106".into()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        disabled: false,
        created_ms: 1_600_000_000_000,
        epoch: 2,
    }
}

fn session() -> Session {
    Session {
        username: "zhang.wei".into(),
        epoch: 2,
        created_ms: 1_600_000_000_000,
        expires_ms: 1_600_043_200_000,
    }
}

fn code() -> EnrolmentCode {
    EnrolmentCode {
        id: id(4),
        code_hash: [9; 32],
        role: Role::Field,
        org_unit: "140106001".into(),
        label: "柳巷街道".into(),
        created_ms: 1_600_000_000_000,
        expires_ms: 1_600_086_400_000,
        created_by: "zhang.wei".into(),
    }
}

fn org_unit() -> OrgUnit {
    OrgUnit {
        code: "140106001".into(),
        name: "柳巷街道".into(),
        unit_type: UnitType::Street,
        parent: Some("140106".into()),
    }
}

fn conflict() -> Conflict {
    Conflict {
        field: "attendees".into(),
        winner: json!(50),
        loser: json!(42),
        winner_hlc: hlc(1_600_000_002_000, 1, 5),
        loser_hlc: hlc(1_600_000_001_000, 0, 6),
    }
}

fn applied() -> Applied {
    Applied {
        content: [0xab; 16],
        seq: 42,
        restamped: true,
        hlc: hlc(1_600_000_002_000, 1, 5),
        conflicts: vec![ConflictReport {
            field: "attendees".into(),
            winner: json!(50),
            loser: json!(42),
        }],
    }
}

fn stored_conflict() -> StoredConflict {
    StoredConflict {
        record_id: id(7),
        conflict: conflict(),
        seq: 42,
        open: true,
    }
}

fn rejection() -> StoredRejection {
    StoredRejection {
        device_id: id(1),
        received_ms: 1_600_000_100_000,
        mutation: r#"{"id":"x","kind":"lecture","set":{"org_unit":"999"}}"#.into(),
        error: ErrorObject {
            code: "out_of_scope".into(),
            message: "不在本设备的范围内".into(),
            field: Some("org_unit".into()),
            locked: None,
        },
    }
}

fn audit_body() -> AuditBody {
    AuditBody {
        n: 9,
        server_ms: 1_600_000_100_000,
        seq: 42,
        record_id: id(7),
        kind: Kind::Lecture,
        cause: AuditCause::Push,
        mutation_id: Some(id(8)),
        conflict_id: None,
        device_id: Some(id(1)),
        actor: Some("zhang.wei".into()),
        record_prev: Some(3),
        hlc: hlc(1_600_000_002_000, 1, 5),
        pushed_hlc: Some(hlc(1_600_000_002_000, 0, 5)),
        changes: vec![
            Change {
                field: "attendees".into(),
                from: json!(42),
                to: json!(50),
            },
            Change {
                field: "topics".into(),
                from: serde_json::Value::Null,
                to: json!(["宪法", "民法典"]),
            },
        ],
        conflicts: vec![(id(10), conflict())],
        period: None,
    }
}

fn unit_agg() -> UnitAgg {
    let mut sites = BTreeMap::new();
    sites.insert((2020, 1), 3);
    sites.insert((2020, 2), 5);
    UnitAgg {
        records: 120,
        xor: 0x1234_5678_9abc_def0,
        corners_active: 1,
        conflicts_open: 2,
        sites,
    }
}

fn record() -> RecordState {
    let reg = |value, ms, seq| Register {
        value,
        hlc: hlc(ms, 0, 5),
        seq,
    };
    let mut fields = BTreeMap::new();
    fields.insert(
        "attendees".to_string(),
        reg(json!(50), 1_600_000_002_000, 2),
    );
    fields.insert(
        "org_unit".to_string(),
        reg(json!("140106001"), 1_600_000_001_000, 1),
    );
    fields.insert(
        "title".to_string(),
        reg(json!("民法典进社区"), 1_600_000_001_000, 1),
    );
    RecordState {
        id: id(7),
        kind: Kind::Lecture,
        seq: 2,
        fields,
        deleted: Some(reg(json!(false), 1_600_000_001_000, 1)),
        open_conflicts: 1,
        ever: vec!["140106".into(), "140106001".into()],
    }
}

/// `bytes` are exactly `hex`; on a difference, says what they are now.
fn pinned(what: &str, bytes: &[u8], hex: &str) {
    assert_eq!(
        hex::encode(bytes),
        hex,
        "the stored bytes of {what} changed: a new store format, with an upgrade, or undo the change"
    );
}

/// Encodes to the pinned bytes, and the pinned bytes decode to the value.
fn golden<T: Persist + PartialEq + std::fmt::Debug>(what: &str, v: &T, hex: &str) {
    pinned(what, &encode(v), hex);
    assert_eq!(
        &decode::<T>(&hex::decode(hex).unwrap()).unwrap(),
        v,
        "{what}"
    );
}

fn approval() -> Approval {
    Approval {
        org_unit: "140106001".into(),
        period: Period::Year(2020),
        approved_by: "li.na".into(),
        approved_ms: 1_600_000_200_000,
    }
}

fn stored_period() -> StoredPeriod {
    StoredPeriod {
        org_unit: "140106001".into(),
        period: Period::Quarter(2020, 3),
        state: PeriodState::Returned,
        by: "li.na".into(),
        at_ms: 1_600_000_200_000,
        comment: "九月少报一场".into(),
    }
}

fn period_entry() -> AuditBody {
    AuditBody {
        n: 10,
        server_ms: 1_600_000_200_000,
        seq: 42,
        record_id: Uuid::nil(),
        kind: Kind::Lecture,
        cause: AuditCause::Period,
        mutation_id: None,
        conflict_id: None,
        device_id: Some(id(11)),
        actor: Some("li.na".into()),
        record_prev: None,
        hlc: hlc(1_600_000_200_000, 0, 11),
        pushed_hlc: None,
        changes: Vec::new(),
        conflicts: Vec::new(),
        period: Some(PeriodStep {
            org_unit: "140106001".into(),
            period: Period::Month(2020, 9),
            action: PeriodAction::Return,
            state: PeriodState::Returned,
            comment: "九月少报一场".into(),
        }),
    }
}

/// Periods and what they add: a period's state, a period step in the
/// audit chain, and a `period_locked` rejection with its approval.
#[test]
fn periods() {
    golden("a period", &stored_period(), "0196a9313430313036303031a7323032302d5133a872657475726e6564a56c692e6e61cf0000017487718d40b2e4b99de69c88e5b091e68aa5e4b880e59cba");
    let mut locked = rejection();
    locked.error = ErrorObject {
        code: "period_locked".into(),
        message: "已审核锁定".into(),
        field: Some("org_unit".into()),
        locked: Some(approval()),
    };
    golden("a period_locked rejection", &locked, "0195c41001920000000070008000000000000001cf00000174877006a0d9347b226964223a2278222c226b696e64223a226c656374757265222c22736574223a7b226f72675f756e6974223a22393939227d7d93ad706572696f645f6c6f636b6564afe5b7b2e5aea1e6a0b8e99481e5ae9aa86f72675f756e697494a9313430313036303031a432303230a56c692e6e61cf0000017487718d40");
    let hex = "010101010101010101010101010101010101010101010101010101010101010101cf0951383b8effb487edf0320983818a3097c3d334a03c6c339a35480a8eb28edc00100acf0000017487718d402ac41000000000000000000000000000000000a74c656374757265a6706572696f64c0c0c4100192000000007000800000000000000ba56c692e6e61c093cf0000017487718d4000c4100192000000007000800000000000000bc0909095a9313430313036303031a7323032302d3039a672657475726ea872657475726e6564b2e4b99de69c88e5b091e68aa5e4b880e59cba";
    let (bytes, _) = codec::encode_audit(&[1; 32], &period_entry());
    pinned("a period step's audit entry", &bytes, hex);
    let read = codec::decode_audit(&hex::decode(hex).unwrap()).unwrap();
    assert!(read.hash_ok);
    assert_eq!(read.body, period_entry());
}

fn dismiss_entry() -> AuditBody {
    AuditBody {
        n: 11,
        server_ms: 1_600_000_300_000,
        seq: 42,
        record_id: id(7),
        kind: Kind::Lecture,
        cause: AuditCause::Dismiss,
        mutation_id: None,
        conflict_id: None,
        device_id: None,
        actor: Some("li.na".into()),
        record_prev: Some(3),
        hlc: hlc(1_600_000_300_000, 0, 11),
        pushed_hlc: None,
        changes: vec![Change {
            field: pufa_core::audit::NOT_DUPLICATE_FIELD.into(),
            from: json!(null),
            to: json!(id(8).to_string()),
        }],
        conflicts: Vec::new(),
        period: None,
    }
}

/// Likely double entries: a pair marked "not a duplicate", the audit
/// entry of the mark, and a coordinator's delete.
#[test]
fn duplicates() {
    let d = StoredDismissal {
        a: id(7),
        b: id(8),
        by: "li.na".into(),
        at_ms: 1_600_000_300_000,
    };
    golden("a dismissed pair", &d, "0194c41001920000000070008000000000000007c41001920000000070008000000000000008a56c692e6e61cf00000174877313e0");
    let mut swapped = encode(&d);
    let at = swapped
        .windows(16)
        .position(|w| w == id(7).as_bytes())
        .unwrap();
    swapped[at..at + 16].copy_from_slice(id(9).as_bytes());
    assert!(matches!(
        decode::<StoredDismissal>(&swapped),
        Err(crate::store::StoreError::Corrupt(_))
    ));
    let mut delete = dismiss_entry();
    delete.cause = AuditCause::Delete;
    delete.changes = vec![Change {
        field: "_deleted".into(),
        from: json!(null),
        to: json!(true),
    }];
    for (what, body, hex) in [
        ("a not-a-duplicate mark's audit entry", dismiss_entry(), "010101010101010101010101010101010101010101010101010101010101010101832ecfe35a879a7f1b4a50713ca0d5cd6bbcfe8e5a958788f47fa8084c3f02ad9f0bcf00000174877313e02ac41001920000000070008000000000000007a74c656374757265a76469736d697373c0c0c0a56c692e6e610393cf00000174877313e000c4100192000000007000800000000000000bc09193b15f6e6f745f6475706c69636174655f6f66c0d92430313932303030302d303030302d373030302d383030302d30303030303030303030303890"),
        ("a coordinator's delete's audit entry", delete, "0101010101010101010101010101010101010101010101010101010101010101010dc0795f30a8110bc85da4acaddc18947ba0f4c13aa4b55c11203e5115c755ff9f0bcf00000174877313e02ac41001920000000070008000000000000007a74c656374757265a664656c657465c0c0c0a56c692e6e610393cf00000174877313e000c4100192000000007000800000000000000bc09193a85f64656c65746564c0c390"),
    ] {
        let (bytes, _) = codec::encode_audit(&[1; 32], &body);
        pinned(what, &bytes, hex);
        let read = codec::decode_audit(&hex::decode(hex).unwrap()).unwrap();
        assert!(read.hash_ok);
        assert_eq!(read.body, body);
    }
}

#[test]
fn devices() {
    golden("a device", &device(), "019ac41001920000000070008000000000000001a56669656c64a9313430313036303031afe78e8be88ab3e79a84e6898be69cbac2dc00200707070707070707070707070707070707070707070707070707070707070707cf00000174876e8000cf00000174877006a094ae707566612d7765622f302e312e3003cf00000174876f4350cf00000174877002b8d1fc18");
    golden("the bootstrap admin", &bootstrap_admin(), "019ac41001920000000070008000000000000002a561646d696ec0a561646d696ec3dc0020000000000000000000000000000000000000000000000000000000000000000001c0c0c0");
}

#[test]
fn people_and_codes() {
    golden("an account", &account(), "0199c41001920000000070008000000000000003a97a68616e672e776569a6e5bca0e4bc9fab636f6f7264696e61746f72a6313430313036d92c246172676f6e32696424763d3139246d3d31393435362c743d322c703d3124633246736441246147467a6141c2cf00000174876e800002");
    golden(
        "a session",
        &session(),
        "0194a97a68616e672e77656902cf00000174876e8000cf000001748a01ae00",
    );
    golden("an enrolment code", &code(), "0198c41001920000000070008000000000000004dc00200909090909090909090909090909090909090909090909090909090909090909a56669656c64a9313430313036303031ace69fb3e5b7b7e8a197e98193cf00000174876e8000cf000001748c94dc00a97a68616e672e776569");
}

#[test]
fn org_units() {
    golden(
        "an org unit",
        &org_unit(),
        "0194a9313430313036303031ace69fb3e5b7b7e8a197e98193a6737472656574a6313430313036",
    );
}

#[test]
fn sync_state() {
    golden("an applied mutation", &applied(), "0195dc0010ccabccabccabccabccabccabccabccabccabccabccabccabccabccabccabccab2ac393cf00000174876e87d001c410019200000000700080000000000000059193a9617474656e64656573322a");
    golden("a conflict", &stored_conflict(), "0194c4100192000000007000800000000000000795a9617474656e64656573322a93cf00000174876e87d001c4100192000000007000800000000000000593cf00000174876e83e800c410019200000000700080000000000000062ac3");
    golden("a rejection", &rejection(), "0194c41001920000000070008000000000000001cf00000174877006a0d9347b226964223a2278222c226b696e64223a226c656374757265222c22736574223a7b226f72675f756e6974223a22393939227d7d93ac6f75745f6f665f73636f7065bbe4b88de59ca8e69cace8aebee5a487e79a84e88c83e59bb4e58685a86f72675f756e6974");
    golden(
        "the server HLC",
        &(1_600_000_002_000u64, 1u32),
        "0192cf00000174876e87d001",
    );
    golden(
        "the audit head",
        &(9u64, [1u8; 32]),
        "019209dc00200101010101010101010101010101010101010101010101010101010101010101",
    );
}

/// An audit entry's bytes are hashed into the chain: a change would break
/// every chain written before it.
#[test]
fn audit_entries() {
    let hex = "0101010101010101010101010101010101010101010101010101010101010101014b612e71581f489bae12dda8a46d25fc9c09576488dba50beaf5064650a0c4a99f09cf00000174877006a02ac41001920000000070008000000000000007a74c656374757265a470757368c41001920000000070008000000000000008c0c41001920000000070008000000000000001a97a68616e672e7765690393cf00000174876e87d001c4100192000000007000800000000000000593cf00000174876e87d000c410019200000000700080000000000000059293a9617474656e646565732a3293a6746f70696373c092a6e5aeaae6b395a9e6b091e6b395e585b89192c4100192000000007000800000000000000a95a9617474656e64656573322a93cf00000174876e87d001c4100192000000007000800000000000000593cf00000174876e83e800c41001920000000070008000000000000006";
    let (bytes, hash) = codec::encode_audit(&[1; 32], &audit_body());
    pinned("an audit entry", &bytes, hex);
    let read = codec::decode_audit(&hex::decode(hex).unwrap()).unwrap();
    assert!(read.hash_ok);
    assert_eq!((read.prev, read.hash), ([1; 32], hash));
    assert_eq!(read.body, audit_body());
}

#[test]
fn records() {
    let compact = "0298c41001920000000070008000000000000007a74c65637475726502929293cf00000174876e87d000c41001920000000070008000000000000005029293cf00000174876e83e800c41001920000000070008000000000000005019393a9617474656e64656573320093a86f72675f756e6974a93134303130363030310193a57469746c65b2e6b091e6b395e585b8e8bf9be7a4bee58cba0192c2010192a6313430313036a9313430313036303031";
    pinned("a record", &codec::encode_record(&record()), compact);
    assert_eq!(
        codec::decode_record(&hex::decode(compact).unwrap()).unwrap(),
        record()
    );
    // What formats before 5 wrote, still read.
    let positional = "0197c41001920000000070008000000000000007a74c6563747572650283a9617474656e64656573933293cf00000174876e87d000c4100192000000007000800000000000000502a86f72675f756e697493a931343031303630303193cf00000174876e83e800c4100192000000007000800000000000000501a57469746c6593b2e6b091e6b395e585b8e8bf9be7a4bee58cba93cf00000174876e83e800c410019200000000700080000000000000050193c293cf00000174876e83e800c41001920000000070008000000000000005010192a6313430313036a9313430313036303031";
    golden("a positional record", &record(), positional);
    assert_eq!(
        codec::decode_record(&hex::decode(positional).unwrap()).unwrap(),
        record()
    );
}

#[test]
fn aggregates() {
    let cases: [(&str, AggKey, AggValue, &str); 5] = [
        (
            "a unit's figures",
            AggKey::Unit("b".into()),
            AggValue::Unit(unit_agg()),
            "019578cf123456789abcdef001028292cd07e4010392cd07e40205",
        ),
        (
            "a month's lectures",
            AggKey::Month("b".into(), 24_243),
            AggValue::Month(vec![(3, (2, 80)), (17, (1, 35))]),
            "019292039202509211920123",
        ),
        (
            "a year's topics",
            AggKey::Topics("b".into(), 2020),
            AggValue::Topics(vec![(String::new(), (1, 10)), ("宪法".into(), (4, 200))]),
            "019292a092010a92a6e5aeaae6b3959204ccc8",
        ),
        (
            "a unit's highest seq",
            AggKey::EverMax("b".into()),
            AggValue::EverMax(42),
            "000000000000002a",
        ),
        (
            "a unit's legal understanders",
            AggKey::Understanders("b".into()),
            AggValue::Understanders(vec![(18_322, (2, 1)), (18_400, (1, 0))]),
            "019292cd479292020192cd47e0920100",
        ),
    ];
    for (what, key, value, hex) in cases {
        pinned(what, &codec::agg_value(&value).unwrap(), hex);
        let k = codec::agg_key(&key);
        let read = codec::decode_agg(&k[codec::AGG.len()..], &hex::decode(hex).unwrap()).unwrap();
        assert_eq!(read, (key, value), "{what}");
    }
}

/// Kinds are stored by variant name: a kind added later leaves the bytes
/// of records of the others as they were (`records` above).
#[test]
fn a_legal_understander_record() {
    let mut r = record();
    r.kind = Kind::LegalUnderstander;
    r.fields.remove("attendees");
    r.fields.remove("title");
    for (field, value) in [
        ("name", json!("王丽")),
        ("appointed_on", json!("2020-06-01")),
        ("status", json!("serving")),
        ("phone", json!("0351-4041234")),
    ] {
        let at = Register {
            value,
            hlc: hlc(1_600_000_001_000, 0, 5),
            seq: 1,
        };
        r.fields.insert(field.to_string(), at);
    }
    let hex = "0298c41001920000000070008000000000000007b14c6567616c556e6465727374616e64657202919293cf00000174876e83e800c41001920000000070008000000000000005019593ac6170706f696e7465645f6f6eaa323032302d30362d30310093a46e616d65a6e78e8be4b8bd0093a86f72675f756e6974a93134303130363030310093a570686f6e65ac303335312d343034313233340093a6737461747573a773657276696e670092c2000192a6313430313036a9313430313036303031";
    pinned("a legal understander", &codec::encode_record(&r), hex);
    assert_eq!(codec::decode_record(&hex::decode(hex).unwrap()).unwrap(), r);
}

/// A value the disk types do not know is corrupt, not a panic or a guess.
#[test]
fn unknown_enum_names_are_corrupt() {
    let mut bytes = encode(&org_unit());
    let at = bytes.windows(6).position(|w| w == b"street").unwrap();
    bytes[at..at + 6].copy_from_slice(b"planet");
    assert!(matches!(
        decode::<OrgUnit>(&bytes),
        Err(crate::store::StoreError::Corrupt(_))
    ));
}
