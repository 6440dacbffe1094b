//! The binary's flags: a bad `--time-zone` or TLS files that do not belong
//! together stop it before it touches `--data`, naming what is wrong.
//! (What the library makes of those values is tested in
//! `server/tests/field_app.rs` and `server/tests/connections.rs`.)

use std::path::{Path, PathBuf};

/// A zone the bundled database lacks stops the binary before it touches
/// `--data`, with clap's usage error (exit 2) naming the flag; the same
/// for `PUFA_TIME_ZONE`.
#[test]
fn the_binary_refuses_an_unknown_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |flag: Option<&str>, env: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pufa-server"));
        cmd.args(["--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .env_remove("PUFA_TIME_ZONE");
        if let Some(zone) = flag {
            cmd.args(["--time-zone", zone]);
        }
        if let Some(zone) = env {
            cmd.env("PUFA_TIME_ZONE", zone);
        }
        cmd.output().unwrap()
    };
    for out in [run(Some("Foo/Bar"), None), run(None, Some("Foo/Bar"))] {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--time-zone")
                && stderr.contains("Foo/Bar")
                && stderr.contains("IANA time zone database"),
            "{stderr}"
        );
    }
    assert!(
        !data.exists(),
        "the data dir was created by a server that did not start"
    );
}

/// A certificate and a key of different pairs, written as PEM files:
/// `(certificate, key)`.
fn mismatched_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let names = vec!["localhost".to_string()];
    let a = rcgen::generate_simple_self_signed(names.clone()).unwrap();
    let b = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert, key) = (dir.join("a.crt"), dir.join("b.key"));
    std::fs::write(&cert, a.cert.pem()).unwrap();
    std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// TLS files the library refuses (another key than the certificate's)
/// stop the binary, naming the file; half of the pair is a usage error.
#[test]
fn the_binary_refuses_bad_tls_files() {
    let d = tempfile::tempdir().unwrap();
    let (cert_a, key_b) = mismatched_pair(d.path());
    let key_b_s = key_b.display().to_string();

    // The binary refuses to start, naming the file, before touching --data.
    let data = d.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pufa-server"))
        .args(["--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert_a)
        .arg("--tls-key")
        .arg(&key_b)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS") && stderr.contains(&key_b_s),
        "{stderr}"
    );
    assert!(
        !data.exists(),
        "the data dir was created by a server that did not start"
    );
    // --tls-cert without --tls-key is a usage error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pufa-server"))
        .args(["--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert_a)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
