//! The throwaway PostgreSQL cluster of the fault tests (`pufa_tests::pg`)
//! does what they rely on: a row committed with synchronous commit
//! survives a crash of the database (`restart`: `-m immediate`, then crash
//! recovery on the same data dir and port).
//!
//! Needs the PostgreSQL server binaries (Debian's `postgresql`). Without
//! them the test is skipped with a loud message, except under `CI=true`
//! (`.ci/run` installs them), where it fails.

use pufa_tests::pg::PgCluster;
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        // Ends with an error when the server goes down under it.
        let _ = conn.await;
    });
    client
}

async fn show(client: &Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_synchronously_committed_row_survives_a_crash_of_the_cluster() {
    let Some(mut pg) = PgCluster::start_or_skip() else {
        return;
    };
    let client = connect(&pg.url()).await;
    assert_eq!(
        (
            show(&client, "fsync").await,
            show(&client, "synchronous_commit").await
        ),
        ("on".to_string(), "on".to_string())
    );
    client
        .batch_execute("CREATE TABLE lecture (id uuid PRIMARY KEY, title text NOT NULL)")
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4();
    let title = "民法典进社区";
    let inserted = client
        .execute(
            "INSERT INTO lecture (id, title) VALUES ($1, $2)",
            &[&id, &title],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    let started = show(&client, "port").await;
    assert_eq!(started, pg.port().to_string());
    let first_start: String = client
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .unwrap()
        .get(0);
    drop(client);

    pg.restart().expect("crash and restart the cluster");
    assert!(
        pg.log()
            .contains("database system was not properly shut down; automatic recovery in progress"),
        "the restart was a crash and recovery; log:\n{}",
        pg.log()
    );

    let client = connect(&pg.url()).await;
    let second_start: String = client
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(first_start, second_start, "a new server process");
    let rows = client
        .query("SELECT title FROM lecture WHERE id = $1", &[&id])
        .await
        .unwrap();
    let titles: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(titles, [title]);
    drop(client);
    pg.stop().expect("stop the cluster");
}
