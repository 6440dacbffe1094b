//! Carrying a [`Plan`] out against a running server: the org tree and the
//! tokens through [`AdminClient`], then the simulated devices, each a
//! [`pufa_client::Client`] syncing over HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pufa_client::{
    AdminClient, Client, ClientConfig, Filter, HttpTransport, RetryPolicy, Transport,
};
use pufa_core::wire::{PullEntry, Role, TokenIssued, TokenRequest, TotalsResponse};
use serde_json::json;
use uuid::Uuid;

use crate::plan::{plan, Expected, Plan, Step, Tag};
use crate::{
    io_err, org_units, write_tokens, DemoError, Token, DEVICES_DIR, DISTRICT,
    STREET_COORDINATOR_UNIT,
};

/// The 2020 report's figure date range.
const YEAR_FROM: &str = "2020-01-01";
const YEAR_TO: &str = "2020-12-31";
/// Longest the clock guard waits (see [`Step::After`]); in practice it
/// never waits, as a whole sync lies between the two edits.
const CLOCK_GUARD_MAX: Duration = Duration::from_secs(10);

/// A coordinator's sign-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordinator {
    pub org_unit: String,
    pub name: String,
    pub token: Token,
}

/// A simulated device after the year: what it holds, to compare with the
/// server.
#[derive(Clone, Debug)]
pub struct DemoDevice {
    pub name: String,
    pub label: String,
    pub org_unit: String,
    pub device_id: Uuid,
    pub token: Token,
    pub dir: PathBuf,
    /// Confirmed records it holds, and their checksum as the server
    /// computes it (`GET /v1/sync/checksum`).
    pub records: u64,
    pub checksum: String,
    /// Edits it has not had acknowledged: unsynced, or rejected.
    pub pending: u64,
    pub rejected: u64,
}

/// What [`populate`] made.
#[derive(Clone, Debug)]
pub struct DemoInfo {
    pub seed: u64,
    /// The district's coordinator first, then the street's.
    pub coordinators: Vec<Coordinator>,
    pub devices: Vec<DemoDevice>,
    /// What the plan meant the server to hold.
    pub expected: Expected,
    /// 2020 as the district coordinator sees it.
    pub figures: Figures,
}

/// The 2020 figures of 迎泽区 as the server answers them.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub totals: TotalsResponse,
    pub rejections: usize,
}

impl Figures {
    /// One line for people.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        format!(
            "2020 in {}: {} lectures ({} attendees) in {} communities and villages; \
             legal library corners active in {} of {} communities and villages; \
             demonstration sites awarded: {} provincial, {} municipal; \
             {} legal understanders serving in {} of {} communities and villages; \
             {} open conflicts; {} rejected edits",
            t.org.name,
            t.lectures.count,
            t.lectures.attendees,
            t.lectures.units_covered,
            t.library_corners.units_covered,
            t.library_corners.units_total,
            t.demo_sites.provincial,
            t.demo_sites.municipal,
            t.legal_understanders.serving,
            t.legal_understanders.units_covered,
            t.legal_understanders.units_total,
            t.conflicts_open,
            self.rejections,
        )
    }
}

/// A failed call of `AdminClient`, named.
fn api(call: &'static str) -> impl FnOnce(pufa_client::Error) -> DemoError {
    move |source| DemoError::Api { call, source }
}

/// A device's or coordinator's token, issued by the admin.
async fn issue(
    admin: &AdminClient,
    role: Role,
    org_unit: &str,
    label: &str,
) -> Result<TokenIssued, DemoError> {
    admin
        .issue_token(&TokenRequest {
            role,
            org_unit: Some(org_unit.into()),
            label: Some(label.into()),
            device_id: None,
        })
        .await
        .map_err(api("POST /v1/admin/tokens"))
}

/// The latest HLC the server holds of record `id` (`ms`).
async fn record_hlc_ms(admin: &AdminClient, id: Uuid) -> Result<u64, DemoError> {
    let mut since = 0;
    loop {
        let page = admin
            .pull(since, 5000)
            .await
            .map_err(api("GET /v1/sync/pull"))?;
        for e in &page.records {
            if let PullEntry::Record(r) = e {
                if r.id == id {
                    return Ok(r.hlc.ms);
                }
            }
        }
        if !page.has_more {
            return Err(DemoError::Unexpected(format!(
                "record {id} is not on the server"
            )));
        }
        since = page.next;
    }
}

/// 2020 in 迎泽区, as `coordinator` reads it.
pub(crate) async fn figures(coordinator: &AdminClient) -> Result<Figures, DemoError> {
    let totals = coordinator
        .totals(&format!("org={DISTRICT}&from={YEAR_FROM}&to={YEAR_TO}"))
        .await
        .map_err(api("GET /v1/totals"))?;
    let rejections = coordinator
        .rejections(&format!("org={DISTRICT}"))
        .await
        .map_err(api("GET /v1/rejections"))?;
    Ok(Figures {
        totals,
        rejections: rejections.len(),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Fills a running server, empty of records, with the year of [`plan`]`(seed)`:
/// imports the org tree, issues the devices' and coordinators' tokens with
/// `admin_token`, runs the devices (their stores under
/// `<data_dir>/demo-devices/`), and writes the coordinators' tokens to
/// `<data_dir>/demo-tokens.txt` (mode 0600).
///
/// ```no_run
/// # async fn f() -> Result<(), pufa_demo::DemoError> {
/// let dir = std::path::Path::new("./pufa-demo");
/// let admin = std::fs::read_to_string(dir.join("admin.token")).unwrap();
/// let info = pufa_demo::populate("http://127.0.0.1:8080", admin.trim(), dir, 2020).await?;
/// println!("{}", info.figures.summary());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`DemoError::StoreNotEmpty`] if the server holds records already (nothing
/// is changed then); otherwise a failed call, device, or file, named. A
/// failure part-way leaves a partial demo: start again on a new server.
pub async fn populate(
    base_url: &str,
    admin_token: &str,
    data_dir: &Path,
    seed: u64,
) -> Result<DemoInfo, DemoError> {
    let plan = plan(seed);
    // One connection pool for the admin's calls and every device's.
    let transport: Arc<dyn Transport> = Arc::new(HttpTransport::new(base_url)?);
    let admin = AdminClient::new(transport.clone(), admin_token);
    let all = admin
        .checksum()
        .await
        .map_err(api("GET /v1/sync/checksum"))?;
    if all.count > 0 {
        return Err(DemoError::StoreNotEmpty);
    }
    let units = org_units();
    admin
        .import_org_units(&units)
        .await
        .map_err(api("PUT /v1/admin/org-units"))?;

    let devices_dir = data_dir.join(DEVICES_DIR);
    pufa_durable::create_dir_all(&devices_dir).map_err(io_err(&devices_dir))?;
    let mut clients = Vec::with_capacity(plan.devices.len());
    for d in &plan.devices {
        let t = issue(&admin, Role::Field, &d.org_unit, &d.label).await?;
        let dir = devices_dir.join(&d.name);
        let mut config = ClientConfig::new(&dir, t.device_id, &t.token);
        config.app_version = concat!("pufa-demo/", env!("CARGO_PKG_VERSION")).into();
        // The server is local: if it stops, fail within a second rather
        // than back off for minutes.
        config.retry = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            seed,
        };
        let client =
            Client::open(config, transport.clone()).map_err(|source| DemoError::Device {
                device: d.name.clone(),
                source,
            })?;
        clients.push((client, Token::new(t.token), dir));
    }
    let mut coordinators = Vec::new();
    for (unit, label) in [
        (DISTRICT, "迎泽区司法局 普法科（演示）"),
        (STREET_COORDINATOR_UNIT, "迎泽街道司法所（演示）"),
    ] {
        let t = issue(&admin, Role::Coordinator, unit, label).await?;
        coordinators.push(Coordinator {
            org_unit: unit.into(),
            name: units
                .iter()
                .find(|u| u.code == unit)
                .map_or_else(|| unit.to_string(), |u| u.name.clone()),
            token: Token::new(t.token),
        });
    }

    let mut tags: Vec<Option<Uuid>> = Vec::new();
    for step in &plan.steps {
        run_step(&plan, &clients, &admin, &mut tags, step).await?;
    }

    let mut devices = Vec::with_capacity(clients.len());
    for (d, (client, token, dir)) in plan.devices.iter().zip(&clients) {
        let dev_err = |source| DemoError::Device {
            device: d.name.clone(),
            source,
        };
        let (records, xor) = local_checksum(client).map_err(dev_err)?;
        let status = client.status().map_err(dev_err)?;
        devices.push(DemoDevice {
            name: d.name.clone(),
            label: d.label.clone(),
            org_unit: d.org_unit.clone(),
            device_id: client.device_id(),
            token: token.clone(),
            dir: dir.clone(),
            records,
            checksum: pufa_core::merge::checksum_text(xor),
            pending: status.pending,
            rejected: status.rejected,
        });
    }
    let district = AdminClient::new(transport, coordinators[0].token.expose());
    let figures = figures(&district).await?;
    write_tokens(data_dir, seed, &coordinators)?;
    Ok(DemoInfo {
        seed,
        coordinators,
        devices,
        expected: plan.expected,
        figures,
    })
}

/// The device's own checksum: its confirmed records (a record it holds
/// only as unsent edits has seq 0).
fn local_checksum(client: &Client) -> pufa_client::Result<(u64, u64)> {
    let all = client.list(&Filter {
        include_deleted: true,
        ..Filter::default()
    })?;
    Ok(all.iter().filter(|r| r.seq > 0).fold((0, 0), |(n, x), r| {
        (n + 1, x ^ pufa_core::merge::record_digest(r.id, r.seq))
    }))
}

async fn run_step(
    plan: &Plan,
    clients: &[(Client, Token, PathBuf)],
    admin: &AdminClient,
    tags: &mut Vec<Option<Uuid>>,
    step: &Step,
) -> Result<(), DemoError> {
    let device = match step {
        Step::Record { device, .. }
        | Step::Edit { device, .. }
        | Step::Delete { device, .. }
        | Step::Sync { device }
        | Step::After { device, .. }
        | Step::FixOrgUnit { device, .. }
        | Step::DiscardOutOfScope { device } => *device,
    };
    let name = &plan.devices[device].name;
    let client = &clients[device].0;
    let dev_err = |source| DemoError::Device {
        device: name.clone(),
        source,
    };
    let tagged = |tags: &[Option<Uuid>], tag: Tag| {
        tags.get(tag)
            .copied()
            .flatten()
            .ok_or_else(|| DemoError::Unexpected(format!("record #{tag} used before it was made")))
    };
    match step {
        Step::Record { records, .. } => {
            let ids = client
                .create_many(records.iter().map(|r| (r.kind, r.fields.clone())).collect())
                .map_err(dev_err)?;
            for (r, id) in records.iter().zip(ids) {
                if let Some(t) = r.tag {
                    if tags.len() <= t {
                        tags.resize(t + 1, None);
                    }
                    tags[t] = Some(id);
                }
            }
        }
        Step::Edit { tag, set, .. } => {
            client
                .update(tagged(tags, *tag)?, set.clone())
                .map_err(dev_err)?;
        }
        Step::Delete { tag, .. } => client.delete(tagged(tags, *tag)?).map_err(dev_err)?,
        Step::Sync { .. } => {
            let report = client.sync().await.map_err(dev_err)?;
            if !report.checksum_ok {
                return Err(DemoError::Unexpected(format!(
                    "device {name} does not hold the server's view after a sync"
                )));
            }
        }
        Step::After { tags: of, .. } => {
            let mut latest = 0;
            for t in of {
                latest = latest.max(record_hlc_ms(admin, tagged(tags, *t)?).await?);
            }
            // The device's next edit is stamped at least at its clock
            // corrected by the server's (what the SDK uses).
            let started = Instant::now();
            loop {
                let offset = client.status().map_err(dev_err)?.clock_offset_ms;
                if now_ms() + offset > latest as i64 {
                    break;
                }
                if started.elapsed() > CLOCK_GUARD_MAX {
                    return Err(DemoError::Unexpected(format!(
                        "device {name}'s clock did not pass {latest} ms"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Step::FixOrgUnit { org_unit, .. } => {
            let edit = client
                .rejected()
                .map_err(dev_err)?
                .into_iter()
                .find(|e| e.error.code == "unknown_org_unit")
                .ok_or_else(|| {
                    DemoError::Unexpected(format!(
                        "device {name} has no unknown_org_unit rejection"
                    ))
                })?;
            let mut set = edit.set.clone();
            set.insert("org_unit".into(), json!(org_unit));
            client.resubmit(edit.mutation, Some(set)).map_err(dev_err)?;
        }
        Step::DiscardOutOfScope { .. } => {
            let edit = client
                .rejected()
                .map_err(dev_err)?
                .into_iter()
                .find(|e| e.error.code == "out_of_scope")
                .ok_or_else(|| {
                    DemoError::Unexpected(format!("device {name} has no out_of_scope rejection"))
                })?;
            client.discard(edit.mutation).map_err(dev_err)?;
        }
    }
    Ok(())
}
