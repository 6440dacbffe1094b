//! A field device that records without pause until it is killed, for the
//! power-loss test of the SDK's store (`tests/tests/power_loss.rs`): it
//! opens a `pufa-client` store in the dir given as its first argument and,
//! with the generator seeded by its second, creates lectures and edits
//! their attendees, printing one line per edit the moment the SDK has
//! returned from it (`<record id> <attendees>`): each printed line is an
//! edit the device was told is saved.

use std::io::Write as _;
use std::sync::Arc;

use pufa_client::{Client, ClientConfig, HttpTransport};
use pufa_core::schema::Kind;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: pufa-power-device DIR SEED");
    let seed: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("usage: pufa-power-device DIR SEED");
    let client = Client::open(
        ClientConfig::new(&dir, Uuid::from_u64_pair(seed, seed), "pufa_offline"),
        // Never reached: the device works offline.
        Arc::new(HttpTransport::new("http://127.0.0.1:9").expect("a transport")),
    )
    .expect("the device's store");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut ids: Vec<Uuid> = Vec::new();
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        let attendees = rng.gen_range(0..1000);
        let id = if ids.is_empty() || rng.gen_bool(0.5) {
            let Value::Object(fields) = json!({
                "org_unit": "c11",
                "held_on": format!("2020-{:02}-{:02}", rng.gen_range(1..=12), rng.gen_range(1..=28)),
                "title": format!("国家安全教育日 {n}"),
                "attendees": attendees,
            }) else {
                unreachable!("an object literal")
            };
            let id = client.create_fields(Kind::Lecture, fields).expect("create");
            ids.push(id);
            id
        } else {
            let id = ids[rng.gen_range(0..ids.len())];
            let mut set = serde_json::Map::new();
            set.insert("attendees".into(), json!(attendees));
            client.update(id, set).expect("edit");
            id
        };
        writeln!(out, "{id} {attendees}").expect("stdout");
        out.flush().expect("stdout");
    }
}
