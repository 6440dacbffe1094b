//! A real server on `127.0.0.1:0` over a data dir, for tests that speak
//! HTTP (restarts, demo, backups): `serve` on a spawned task, stopped by
//! `stop` (which waits for the drain and final flush) or on drop.

// Each test file compiles the harness whole; contract.rs does not use this.
#![allow(dead_code)]

use std::path::Path;

use pufa_server::Config;
use tokio::sync::oneshot;

pub struct TestServer {
    pub url: String,
    pub admin: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), pufa_server::RunError>>>,
}

impl TestServer {
    pub async fn start(dir: &Path) -> TestServer {
        TestServer::start_config(Config::new(dir)).await
    }

    pub async fn start_config(config: Config) -> TestServer {
        let dir = config.data_dir.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // `open` completes before serving, so the server is ready when it returns.
        let state = pufa_server::open(config).await.unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(pufa_server::serve(state, listener, async {
            let _ = rx.await;
        }));
        let admin = std::fs::read_to_string(dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        TestServer {
            url,
            admin,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
