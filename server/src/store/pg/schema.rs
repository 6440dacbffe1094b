//! The PostgreSQL store's schema and its versioned migrations.
//!
//! Migrations run at start-up, inside one transaction that first takes a
//! transaction-scoped advisory lock keyed on the schema, so several
//! instances starting at once apply each migration exactly once (the
//! others wait, then find it applied). A database migrated by a newer
//! server is refused, never downgraded.
//!
//! Values are the sled store's encodings ([`crate::store::codec`]):
//! positional MessagePack behind a format byte, in `bytea` columns. The
//! columns beside them (seq, org unit, token hash, …) are what queries
//! and constraints need; the bodies are what the server reads.

use tokio_postgres::GenericClient;

use super::pg_err;
use crate::store::{upgrade, StoreError};

/// First key of the advisory lock migrations take (ASCII "pufa"); the
/// second is `hashtext(current_schema())`, so deployments in separate
/// schemas of one database do not wait for each other.
const MIGRATION_LOCK: i32 = 0x7075_6661;

/// `(version, what it does, SQL)`, applied in order. Append only: a
/// released migration is never edited.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "the store: state, records, feed, idempotency, conflicts, rejections, devices, org units, aggregates, audit log, people",
        r#"
-- One row: the counters every write reads and advances. Writers lock it
-- (SELECT … FOR UPDATE) for the whole transaction: see pg.rs on why the
-- change feed never skips.
CREATE TABLE pufa_state (
    id          smallint PRIMARY KEY CHECK (id = 1),
    store_id    uuid     NOT NULL,
    -- The last seq handed out (every seq up to it is committed).
    seq         bigint   NOT NULL,
    -- The server HLC's high-water mark (MessagePack (ms, counter)).
    hlc         bytea    NOT NULL,
    rejections  bigint   NOT NULL,
    audit_n     bigint   NOT NULL,
    audit_hash  bytea    NOT NULL,
    -- Bumped by every write; aggregate rows carry the gen that wrote them.
    gen         bigint   NOT NULL,
    -- Bumped by every org-unit import, so instances reload their tree.
    org_version bigint   NOT NULL,
    -- The bootstrap admin's device id, once made.
    admin       uuid
);

-- Records at their current seq: the change feed is `ORDER BY seq`.
CREATE TABLE pufa_records (
    id         uuid   PRIMARY KEY,
    seq        bigint NOT NULL UNIQUE,
    -- The record's newest audit entry (its history runs back from it).
    last_entry bigint NOT NULL,
    org_unit   text,
    body       bytea  NOT NULL
);
CREATE INDEX pufa_records_org_unit ON pufa_records (org_unit);

-- Idempotency: the key makes "applied twice" impossible, whichever
-- instance a retry reaches.
CREATE TABLE pufa_applied (
    device_id   uuid  NOT NULL,
    mutation_id uuid  NOT NULL,
    body        bytea NOT NULL,
    PRIMARY KEY (device_id, mutation_id)
);

CREATE TABLE pufa_conflicts (
    id        uuid    PRIMARY KEY,
    record_id uuid    NOT NULL,
    seq       bigint  NOT NULL,
    open      boolean NOT NULL,
    body      bytea   NOT NULL
);
CREATE INDEX pufa_conflicts_open ON pufa_conflicts (seq) WHERE open;

CREATE TABLE pufa_rejections (
    n         bigint PRIMARY KEY,
    device_id uuid   NOT NULL,
    body      bytea  NOT NULL
);

-- token_hash is the device's live token; NULL once revoked.
CREATE TABLE pufa_devices (
    id           uuid   PRIMARY KEY,
    token_hash   bytea  UNIQUE,
    last_pull_ms bigint,
    body         bytea  NOT NULL
);

CREATE TABLE pufa_org_units (
    code text  PRIMARY KEY,
    body bytea NOT NULL
);

-- Per-unit aggregates (the sled store's `g/` entries). A removed entry
-- stays as NULL so that other instances learn of the removal.
CREATE TABLE pufa_aggregates (
    key   bytea  PRIMARY KEY,
    gen   bigint NOT NULL,
    value bytea
);
CREATE INDEX pufa_aggregates_gen ON pufa_aggregates (gen);

-- The hash-chained audit log (sled's `l/` entries, byte for byte).
CREATE TABLE pufa_audit (
    n     bigint PRIMARY KEY,
    value bytea  NOT NULL
);

CREATE TABLE pufa_accounts (
    username text  PRIMARY KEY,
    body     bytea NOT NULL
);

CREATE TABLE pufa_sessions (
    hash       bytea  PRIMARY KEY,
    username   text   NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    body       bytea  NOT NULL
);

CREATE TABLE pufa_codes (
    id         uuid   PRIMARY KEY,
    hash       bytea  NOT NULL UNIQUE,
    expires_ms bigint NOT NULL,
    body       bytea  NOT NULL
);
"#,
    ),
    (
        2,
        "record bodies may be compact (value format byte 2), which servers before it cannot read",
        r#"
-- No table changes: this version keeps servers that cannot read compact
-- record bodies (shared stamps, codec::encode_record) off the database.
COMMENT ON COLUMN pufa_records.body IS
    'codec::encode_record: compact (first byte 2) or positional (first byte 1) MessagePack';
"#,
    ),
    (
        3,
        "rejections are kept per device and per org unit: the unit of the pushing device's token, and indexes to find a device's or a unit's oldest",
        r#"
-- Rows from before this version have '' (their devices' units are in
-- MessagePack bodies): they count as one unit of their own until evicted.
ALTER TABLE pufa_rejections ADD COLUMN org_unit text NOT NULL DEFAULT '';
CREATE INDEX pufa_rejections_device ON pufa_rejections (device_id, n);
CREATE INDEX pufa_rejections_unit ON pufa_rejections (org_unit, n);
"#,
    ),
    (
        4,
        "store format 6: every value is written from the store's own disk types, record bodies only compact",
        r#"
-- No table changes: pufa-server checks in this transaction that every
-- stored value reads as its disk type and rewrites positional record
-- bodies compact (store/upgrade.rs), then keeps servers that wrote values
-- from wire types off the database.
COMMENT ON COLUMN pufa_records.body IS
    'codec::encode_record: compact (first byte 2) MessagePack of the disk types in store/disk.rs';
"#,
    ),
    (
        5,
        "store format 7: topic aggregates count lectures by the topic vocabulary, synonyms folded",
        r#"
-- No table changes: pufa-server recounts every topic aggregate from the
-- records in this transaction (store/upgrade/topics.rs), then keeps
-- servers that count topics as written off the database.
COMMENT ON TABLE pufa_aggregates IS
    'codec::agg_key/agg_value; topic entries count lectures by pufa_core::topics (store format 7)';
"#,
    ),
    (
        6,
        "reporting periods: each unit's submitted, returned and approved periods (approved ones lock writes)",
        r#"
CREATE TABLE IF NOT EXISTS pufa_periods (
    org_unit text    NOT NULL,
    period   text    NOT NULL,
    approved boolean NOT NULL,
    body     bytea   NOT NULL,
    PRIMARY KEY (org_unit, period)
);
CREATE INDEX IF NOT EXISTS pufa_periods_approved ON pufa_periods (approved) WHERE approved;
"#,
    ),
    (
        7,
        "likely double entries: pairs of records a coordinator marked not a duplicate",
        r#"
CREATE TABLE IF NOT EXISTS pufa_dismissals (
    a    uuid  NOT NULL,
    b    uuid  NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (a, b)
);
"#,
    ),
];

/// The schema version from which values are written from the disk types
/// (store format 6); applying it runs [`upgrade::pg_to_format_6`].
const DISK_TYPES: i32 = 4;

/// The schema version from which topic aggregates count by the topic
/// vocabulary (store format 7); applying it runs
/// [`upgrade::topics::pg_to_format_7`].
pub const TOPICS_FOLDED: i32 = 5;

/// The newest migration this server knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies the migrations the database lacks; returns how many.
///
/// # Errors
/// The database's, or [`StoreError::Corrupt`] for a database migrated by a
/// newer server.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, StoreError> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        &[&MIGRATION_LOCK],
    )
    .await
    .map_err(pg_err)?;
    // Quiet: "already exists, skipping" is the normal case.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pufa_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg_err)?;
    let have: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM pufa_migrations", &[])
        .await
        .map_err(pg_err)?
        .get(0);
    if have > latest() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {have}; this server knows up to {}: run a newer pufa-server",
            latest()
        )));
    }
    let mut applied = 0;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
        tx.batch_execute(sql).await.map_err(pg_err)?;
        if *version == DISK_TYPES {
            upgrade::pg_to_format_6(&tx).await?;
        }
        if *version == TOPICS_FOLDED {
            upgrade::topics::pg_to_format_7(&tx).await?;
        }
        tx.execute(
            "INSERT INTO pufa_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(pg_err)?;
        tracing::info!(version, name, "database migrated");
        applied += 1;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(applied)
}

/// Whether the store's tables hold anything (for `migrate`'s refusal to
/// write into a used database).
pub async fn is_empty(client: &impl GenericClient) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pufa_records) + (SELECT count(*) FROM pufa_devices)
                  + (SELECT count(*) FROM pufa_org_units) + (SELECT count(*) FROM pufa_accounts)",
            &[],
        )
        .await
        .map_err(pg_err)?;
    Ok(row.get::<_, i64>(0) == 0)
}
