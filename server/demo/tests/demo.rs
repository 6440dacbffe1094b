//! `pufa-server demo`: the simulated year, carried out against a real server
//! on 127.0.0.1:0 by SDK devices over HTTP, gives the 2020 report's figures;
//! the same seed gives the same totals; a demo dir is served again without
//! refilling; a real store is refused.

use std::collections::BTreeMap;

use pufa_core::wire::{
    ChecksumResponse, OrgUnit, PullEntry, PullResponse, RejectionView, TotalsResponse, UnitType,
};
use pufa_demo::{self as demo, DataDir, DemoError};
use pufa_server::Config;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

// The server's test harness: this file uses its HTTP server.
#[path = "../../tests/support/http.rs"]
mod http;

use http::TestServer;

const SEED: u64 = 2020;
const TOTALS_2020: &str = "/v1/totals?org=140106&from=2020-01-01&to=2020-12-31";

fn get<T: DeserializeOwned>(
    url: &str,
    path: &str,
    token: &str,
) -> impl std::future::Future<Output = T> {
    let req = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(token);
    let path = path.to_string();
    async move {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

/// Every record in the caller's scope, at its latest state.
async fn pull_all(url: &str, token: &str) -> Vec<PullEntry> {
    let (mut since, mut out) = (0, Vec::new());
    loop {
        let page: PullResponse = get(
            url,
            &format!("/v1/sync/pull?since={since}&limit=5000"),
            token,
        )
        .await;
        out.extend(page.records);
        if !page.has_more {
            return out;
        }
        since = page.next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_year_mirrors_the_2020_report() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let info = demo::populate(&server.url, &server.admin, dir.path(), SEED)
        .await
        .unwrap();
    let url = server.url.as_str();
    let district = info.coordinators[0].token.expose().to_string();
    let t: TotalsResponse = get(url, TOTALS_2020, &district).await;
    let e = &info.expected;

    // Close to a hundred lectures, all in communities and villages.
    assert!((90..=99).contains(&t.lectures.count), "{:?}", t.lectures);
    assert_eq!(
        (
            t.lectures.count,
            t.lectures.attendees,
            t.lectures.units_covered
        ),
        (e.lectures, e.attendees, e.lecture_units)
    );
    let units: Vec<OrgUnit> = get(url, "/v1/org-units", &district).await;
    let types: BTreeMap<String, UnitType> =
        units.into_iter().map(|u| (u.code, u.unit_type)).collect();
    let mut lectures = 0;
    for entry in pull_all(url, &district).await {
        let PullEntry::Record(r) = entry else {
            panic!("nothing leaves the district's scope")
        };
        if r.kind != "lecture" || r.deleted {
            continue;
        }
        let unit = r.fields["org_unit"].as_str().unwrap();
        assert!(
            matches!(
                types.get(unit),
                Some(UnitType::Community | UnitType::Village)
            ),
            "a lecture in {unit}, not a grassroots unit"
        );
        assert!(r.fields["held_on"].as_str().unwrap().starts_with("2020-"));
        lectures += 1;
    }
    assert_eq!(lectures, t.lectures.count);

    // An active legal library corner in each of the 113 grassroots units.
    let c = &t.library_corners;
    assert_eq!(
        (c.units_covered, c.units_total, c.coverage),
        (113, 113, 1.0)
    );
    assert_eq!(c.active, e.corners_active);
    // So does the 2020 report, which counts corners as of 31 December
    // 2020 from their histories (each opened by 2019).
    let report: serde_json::Value =
        get(url, "/v1/reports/annual?org=140106&year=2020", &district).await;
    assert_eq!(
        report["library_corners"]["units_covered"], 113,
        "{}",
        report["library_corners"]
    );

    // 3 provincial and 5 municipal demonstration sites in 2020.
    assert_eq!((t.demo_sites.provincial, t.demo_sites.municipal), (3, 5));

    // 113 legal understanders appointed in 2020, one serving in every
    // community and village (首批选聘113名,覆盖所有社区(村)).
    let u = &t.legal_understanders;
    assert_eq!(
        (
            u.appointed,
            u.serving,
            u.units_covered,
            u.units_total,
            u.coverage
        ),
        (113, 113, 113, 113, 1.0)
    );
    assert_eq!(u.appointed, e.understanders);
    let per_unit: Vec<u64> = info
        .figures
        .totals
        .children
        .iter()
        .map(|c| c.legal_understanders.units_total - c.legal_understanders.units_covered)
        .collect();
    assert!(per_unit.iter().all(|gap| *gap == 0), "{per_unit:?}");

    // Genuine conflicts and rejections.
    assert!(t.conflicts_open > 0);
    assert_eq!(t.conflicts_open, e.conflicts);
    let rejections: Vec<RejectionView> = get(url, "/v1/rejections", &district).await;
    assert!(!rejections.is_empty());
    assert_eq!(rejections.len() as u64, e.rejections);
    let codes: Vec<&str> = rejections.iter().map(|r| r.error.code.as_str()).collect();
    assert!(
        codes.contains(&"out_of_scope") && codes.contains(&"unknown_org_unit"),
        "{codes:?}"
    );
    assert_eq!(info.figures.totals, t);

    // Every device holds exactly the server's view of its scope; one keeps
    // an unsynced lecture, one a rejected edit its user has not decided on.
    for d in &info.devices {
        let server_side: ChecksumResponse = get(url, "/v1/sync/checksum", d.token.expose()).await;
        assert_eq!(
            (server_side.count, &server_side.checksum),
            (d.records, &d.checksum),
            "device {}",
            d.name
        );
        assert!(d.dir.starts_with(dir.path().join(demo::DEVICES_DIR)));
    }
    let pending: u64 = info.devices.iter().map(|d| d.pending).sum();
    assert_eq!(pending, e.pending_on_devices);
    assert_eq!(info.devices.iter().map(|d| d.rejected).sum::<u64>(), 1);

    // The street coordinator sees its street only.
    let street: TotalsResponse = get(url, "/v1/totals", info.coordinators[1].token.expose()).await;
    assert_eq!(street.org.code, "140106004");
    assert_eq!(street.library_corners.units_total, 18);

    // The dir is now a demo; its tokens file is private.
    assert_eq!(demo::inspect(dir.path()).unwrap(), DataDir::Demo);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join(demo::TOKENS_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    server.stop().await;

    // The same seed again, as `pufa-server demo` runs it: the same totals.
    let again = tempfile::tempdir().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = demo::launch(Config::new(again.path()), listener, SEED, async {
        let _ = rx.await;
    })
    .await
    .unwrap();
    assert!(second.filled);
    assert_eq!(second.figures.totals, t);
    assert_eq!(second.figures.rejections, rejections.len());
    let tokens = second.coordinators.clone();
    let _ = tx.send(());
    second.wait().await.unwrap();

    // Started again on its dir: served as it is, not filled twice.
    let (tx, rx) = oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let third = demo::launch(Config::new(again.path()), listener, SEED, async {
        let _ = rx.await;
    })
    .await
    .unwrap();
    assert!(!third.filled);
    assert_eq!(third.coordinators, tokens);
    assert_eq!(third.figures.totals, t);
    assert!(third.banner().contains(tokens[0].token.expose()));
    let _ = tx.send(());
    third.wait().await.unwrap();
}

#[tokio::test]
async fn a_real_store_is_never_filled_with_demo_data() {
    let dir = tempfile::tempdir().unwrap();
    drop(pufa_server::open(Config::new(dir.path())).await.unwrap());
    assert_eq!(demo::inspect(dir.path()).unwrap(), DataDir::Store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = demo::launch(
        Config::new(dir.path()),
        listener,
        SEED,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DemoError::NotADemo { .. }), "{err}");
    assert!(!dir.path().join(demo::DEVICES_DIR).exists());

    // Nor a directory of someone else's files.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    assert_eq!(demo::inspect(dir.path()).unwrap(), DataDir::Foreign);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = demo::launch(
        Config::new(dir.path()),
        listener,
        SEED,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert!(!dir.path().join(demo::DEVICES_DIR).exists());

    // A server that holds records refuses `populate` and changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let units = serde_json::to_string(&serde_json::json!([
        {"code":"d","name":"区","type":"district","parent":null},
        {"code":"c","name":"社区","type":"community","parent":"d"},
    ]))
    .unwrap();
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/v1/admin/org-units", server.url))
        .bearer_auth(&server.admin)
        .body(units)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let whoami: serde_json::Value = get(&server.url, "/v1/whoami", &server.admin).await;
    let device = whoami["device_id"].as_str().unwrap();
    let body = serde_json::json!({
        "device_id": device,
        "mutations": [{
            "id": "0192f7a0-0000-7000-8000-000000000101",
            "record_id": "0192f7a0-0000-7000-8000-000000000102",
            "kind": "lecture", "base_seq": 0,
            "hlc": {"ms": 1_593_561_600_000_u64, "c": 0, "node": device},
            "set": {"org_unit": "c", "held_on": "2020-07-01", "title": "民法典进社区", "attendees": 87}
        }],
    });
    let push = http
        .post(format!("{}/v1/sync/push", server.url))
        .bearer_auth(&server.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(push.status().is_success());
    let err = demo::populate(&server.url, &server.admin, dir.path(), SEED)
        .await
        .unwrap_err();
    assert!(matches!(err, DemoError::StoreNotEmpty), "{err}");
    let units: Vec<OrgUnit> = get(&server.url, "/v1/org-units", &server.admin).await;
    assert_eq!(units.len(), 2, "the demo's org tree was not imported");
    server.stop().await;
}
