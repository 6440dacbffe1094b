//! The server's own accept loop over real sockets: TLS with a self-signed
//! certificate (reqwest and the SDK's `HttpTransport`), clear startup errors
//! for bad TLS files, the connection cap (connections beyond it wait for a
//! slot), the header-read timeout that closes idle and slowloris
//! connections, the per-address cap and the reserve that keep one client
//! from holding every slot, and the body timeout.
//!
//! Distinct clients are simulated by binding to other loopback addresses
//! (127.0.0.2, …): Linux routes all of 127/8 to `lo`.
//!
//! Where a test waits for the server to close a socket, that close is the
//! behaviour under test; the generous outer bound only keeps a broken
//! server from hanging the suite.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pufa_client::transport::{Method, Request, Transport};
use pufa_client::HttpTransport;
use pufa_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Upper bound on anything the server should do within a few header
/// timeouts; far above them so that a slow CI machine never trips it.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A server on an ephemeral port; stops on drop.
struct TestServer {
    addr: std::net::SocketAddr,
    admin: String,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), pufa_server::RunError>>>,
}

impl TestServer {
    async fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // `open` completes before serving: the server is ready when it returns.
        let state = pufa_server::open(config).await.unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(pufa_server::serve(state, listener, async {
            let _ = rx.await;
        }));
        let admin = std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        TestServer {
            addr,
            admin,
            _dir: dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(HANG_GUARD, self.task.take().unwrap())
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM
/// files: `(cert path, key path, cert PEM)`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = ck.cert.pem();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, cert_pem)
}

/// Reads until the peer closes; true if it did (EOF or reset), false if
/// the guard ran out first.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(HANG_GUARD, read_to_end).await.is_ok()
}

/// A whole HTTP/1.1 answer read off a raw socket (the server closes after
/// it: `Connection: close`).
async fn raw_get(s: &mut TcpStream, path: &str) -> String {
    raw_get_with(s, path, "").await
}

/// [`raw_get`] with more header lines (each ending in `\r\n`).
async fn raw_get_with(s: &mut TcpStream, path: &str, headers: &str) -> String {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_self_signed_certificate_serves_reqwest_and_the_sdk() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, cert_pem) = self_signed(certs.path(), "server");
    let tls = pufa_server::tls::server_config(&cert, &key).unwrap();
    let server = TestServer::start(|c| {
        c.tls = Some(tls);
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    let port = server.addr.port();

    // reqwest trusting the certificate, by name and by address.
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    for url in [
        format!("https://localhost:{port}/v1/health"),
        format!("https://127.0.0.1:{port}/v1/health"),
    ] {
        let resp = trusting.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }

    // A client that does not trust it fails the handshake; plain HTTP to
    // the TLS port gets no HTTP answer.
    let err = reqwest::Client::new()
        .get(format!("https://127.0.0.1:{port}/v1/health"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/health"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // The SDK's transport, given the certificate as an extra root.
    let sdk = HttpTransport::with_root_certificate(
        &format!("https://127.0.0.1:{port}"),
        cert_pem.as_bytes(),
    )
    .unwrap();
    let resp = sdk
        .send(Request {
            method: Method::Get,
            path: "/v1/whoami".into(),
            token: server.admin.clone(),
            body: None,
        })
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let plain_sdk = HttpTransport::new(&format!("https://127.0.0.1:{port}")).unwrap();
    assert!(plain_sdk
        .send(Request {
            method: Method::Get,
            path: "/v1/health".into(),
            token: String::new(),
            body: None,
        })
        .await
        .is_err());

    // A connection that never starts its handshake is closed after the
    // header timeout, like a silent plain-HTTP one.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_by_server(&mut silent).await,
        "a silent TLS connection is held open"
    );
    server.stop().await;
}

#[track_caller]
fn check_tls_error(cert: &Path, key: &Path, wanted: &[&str]) {
    let err = pufa_server::tls::server_config(cert, key)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    for w in wanted {
        assert!(err.contains(w), "{err:?} does not mention {w:?}");
    }
}

#[test]
fn bad_tls_files_are_refused_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let (cert_a, key_a, _) = self_signed(d.path(), "a");
    let (_, key_b, _) = self_signed(d.path(), "b");
    let missing = d.path().join("missing.pem");
    let garbage = d.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let cert_a_s = cert_a.display().to_string();
    let key_b_s = key_b.display().to_string();
    let missing_s = missing.display().to_string();
    let garbage_s = garbage.display().to_string();

    check_tls_error(
        &missing,
        &key_a,
        &["--tls-cert", &missing_s, "No such file"],
    );
    check_tls_error(&cert_a, &missing, &["--tls-key", &missing_s]);
    check_tls_error(
        &garbage,
        &key_a,
        &["--tls-cert", &garbage_s, "no PEM certificate"],
    );
    check_tls_error(
        &cert_a,
        &garbage,
        &["--tls-key", &garbage_s, "no PEM private key"],
    );
    // A certificate's file given as the key, and the key as the certificate.
    check_tls_error(&cert_a, &cert_a, &["--tls-key", "no PEM private key"]);
    check_tls_error(&key_a, &key_a, &["--tls-cert", "no PEM certificate"]);
    // Another key than the certificate's.
    check_tls_error(
        &cert_a,
        &key_b,
        &[&cert_a_s, &key_b_s, "is not the key of the certificate"],
    );
    assert!(pufa_server::tls::server_config(&cert_a, &key_a).is_ok());
}

/// With one slot, a second connection waits in the accept queue until the
/// first closes: here the first says nothing and the header timeout closes
/// it, and then the second is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let server = TestServer::start(|c| {
        c.max_connections = 1;
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    let idle = TcpStream::connect(server.addr).await.unwrap();
    // Served first: the loop accepts in order, and `idle` is already
    // connected. Its slot is taken as long as it is open.
    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    let answer = raw_get(&mut waiting, "/v1/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The waiting connection was served only after the idle one was closed
    // by the server: its close (sent before the slot was freed) is already
    // in the idle socket when the answer arrives.
    let mut b = [0u8; 1024];
    loop {
        match idle.try_read(&mut b) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            other => panic!(
                "the second connection was served while the first held the only slot: {other:?}"
            ),
        }
    }

    // With two slots, two idle connections do not block a third for ever
    // either, and once they are gone requests flow normally.
    drop(server);
    let server = TestServer::start(|c| {
        c.max_connections = 2;
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    let mut idle1 = TcpStream::connect(server.addr).await.unwrap();
    let mut idle2 = TcpStream::connect(server.addr).await.unwrap();
    let client = reqwest::Client::new();
    let resp = tokio::time::timeout(
        HANG_GUARD,
        client
            .get(format!("http://{}/v1/health", server.addr))
            .send(),
    )
    .await
    .expect("a request behind two idle connections is served")
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(closed_by_server(&mut idle1).await);
    assert!(closed_by_server(&mut idle2).await);
    for _ in 0..5 {
        let r = client
            .get(format!("http://{}/v1/health", server.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    server.stop().await;
}

/// A slowloris client (half a request line, then nothing; or a header
/// trickled a byte at a time) is disconnected after the header timeout,
/// while other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_disconnected_after_the_header_timeout() {
    let server = TestServer::start(|c| {
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /v1/hea").await.unwrap();

    // The trickler keeps sending: the timeout bounds the whole head, not
    // the gap between bytes. (Its pauses pace the attacker; nothing waits
    // on them.)
    let trickle = TcpStream::connect(server.addr).await.unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    let writer = tokio::spawn(async move {
        if trickle_write
            .write_all(b"GET /v1/health HTTP/1.1\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if trickle_write.write_all(b"a").await.is_err() {
                return;
            }
        }
    });

    // Meanwhile a normal client is served.
    let resp = reqwest::get(format!("http://{}/v1/health", server.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    assert!(
        closed_by_server(&mut half).await,
        "half a request line held the connection"
    );
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match trickle_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickled header held the connection");
    tokio::time::timeout(HANG_GUARD, writer)
        .await
        .expect("the trickler's writes fail once the server has closed")
        .unwrap();

    // Kept-alive connections still carry several requests within the
    // timeout, and the server still answers afterwards.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client
            .get(format!("http://{}/v1/health", server.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // A kept-alive connection that goes quiet after an answer is closed
    // after the header timeout too.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"}") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(HANG_GUARD, kept.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(
        closed_by_server(&mut kept).await,
        "an idle kept-alive connection held its slot"
    );
    server.stop().await;
}

/// Shutdown still drains: a slot-holding idle connection does not keep the
/// server from stopping, and the store is flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections() {
    let server = TestServer::start(|c| {
        // Long enough that only shutdown can close the idle connection.
        c.header_timeout = Duration::from_secs(600);
    })
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // The idle connection has been accepted once a request on another
    // connection is answered (the loop accepts in order).
    let resp = reqwest::get(format!("http://{}/v1/health", server.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.stop().await;
    assert!(closed_by_server(&mut idle).await);
}

/// A connection from the loopback address `127.0.0.{host}`: another client
/// as far as the server can tell.
async fn connect_from(host: u8, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server has closed `s` (without waiting): its end of the
/// connection is readable with EOF or a reset.
#[track_caller]
fn still_open(s: &TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.try_read(&mut b) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
        Ok(0) | Err(_) => false,
        Ok(_) => panic!("the server answered half a request line"),
    }
}

/// Finding 5 of the security review, at small scale: slowloris clients
/// (half a request line, then nothing) from three addresses, each opening
/// more connections than there are slots. Before, they took every slot and
/// everyone else waited in the accept queue until the header timeout
/// closed them. Now each address holds at most its cap, the connections
/// beyond it are closed as soon as they are accepted, and the reserved
/// slots answer a health probe and a device while every attacker still
/// holds its connections.
///
/// The header timeout is far longer than the test: while it runs, only the
/// server's shedding can close a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_cannot_take_every_slot_and_health_is_answered_meanwhile() {
    let server = TestServer::start(|c| {
        c.max_connections = 20; // the last 20 / 8 = 2 reserved
        c.max_connections_per_ip = Some(6);
        c.header_timeout = Duration::from_secs(3600);
    })
    .await;
    // 3 × 8 = 24 connections for 20 slots, each sending half a request line.
    let mut held = Vec::new();
    let mut beyond_cap = Vec::new();
    for host in 2..=4 {
        for i in 0..8 {
            let mut s = connect_from(host, server.addr).await;
            // A connection already shed refuses the write; that is fine.
            let _ = s.write_all(b"GET /v1/hea").await;
            if i < 6 {
                held.push(s);
            } else {
                beyond_cap.push(s);
            }
        }
    }
    // The server accepts in order, so each address's first 6 were given
    // slots and its 7th and 8th are closed.
    for s in &mut beyond_cap {
        assert!(
            closed_by_server(s).await,
            "a connection beyond its address's cap was held"
        );
    }
    // 18 slots are held; the 2 reserved ones answer clients holding no
    // other connection: a health probe, an authenticated request.
    let mut probe = connect_from(1, server.addr).await;
    let answer = raw_get(&mut probe, "/v1/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut device = connect_from(5, server.addr).await;
    let auth = format!("Authorization: Bearer {}\r\n", server.admin);
    let answer = raw_get_with(&mut device, "/v1/whoami", &auth).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A reserved slot is not for an address that already holds one: a
    // kept-alive connection from 127.0.0.6 is served, its second is closed.
    let mut kept = connect_from(6, server.addr).await;
    kept.write_all(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"}") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(HANG_GUARD, kept.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let mut second = connect_from(6, server.addr).await;
    assert!(
        closed_by_server(&mut second).await,
        "a second connection from an address holding one took a reserved slot"
    );
    // All the while, every attacker's connection was held, not timed out.
    for s in &held {
        assert!(still_open(s), "an attacker's connection was closed");
    }
    assert!(still_open(&kept));
    // (That an address's slots are its own again once its connections end
    // is checked in `limits.rs`: here the moment the server notices a
    // client's close is not observable.)
    drop(held);
    drop(kept);
    server.stop().await;
}

/// Behind a trusted proxy every connection comes from the proxy, so the
/// per-address cap does not apply: one address may hold every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_per_address_cap_does_not_apply() {
    let server = TestServer::start(|c| {
        c.max_connections = 8;
        c.max_connections_per_ip = Some(2);
        c.trust_proxy = true;
        c.header_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut proxied = Vec::new();
    for _ in 0..7 {
        let mut s = connect_from(7, server.addr).await;
        s.write_all(b"GET /v1/hea").await.unwrap();
        proxied.push(s);
    }
    // The eighth is served: the seven before it were accepted, not closed.
    let mut last = connect_from(7, server.addr).await;
    let answer = raw_get(&mut last, "/v1/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for s in &proxied {
        assert!(still_open(s), "a proxied connection was shed");
    }
    drop(proxied);
    server.stop().await;
}

/// A client with a valid token that trickles its request body used to hold
/// its slot for the whole request timeout; the body timeout now answers it
/// `408 body_timeout` and closes the connection long before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_too_slowly_is_answered_408_and_closed() {
    let server = TestServer::start(|c| {
        c.body_timeout = Duration::from_secs(1);
        // Far longer than the test: only the body timeout can answer.
        c.request_timeout = Duration::from_secs(3600);
    })
    .await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "PUT /v1/admin/org-units HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n[",
        server.admin
    );
    write.write_all(head.as_bytes()).await.unwrap();
    // A byte every 50 ms: 20 bytes/s, far below --body-min-bytes-per-sec.
    // (The pauses pace the attacker; nothing waits on them.)
    let trickler = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(HANG_GUARD, read.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
    tokio::time::timeout(HANG_GUARD, trickler)
        .await
        .expect("the trickler's writes fail once the server has closed")
        .unwrap();

    // A body that arrives whole is not affected.
    let resp = reqwest::Client::new()
        .put(format!("http://{}/v1/admin/org-units", server.addr))
        .bearer_auth(&server.admin)
        .json(&serde_json::json!([{"code": "d", "name": "District", "type": "district", "parent": null}]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    server.stop().await;
}
