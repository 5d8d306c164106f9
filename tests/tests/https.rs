//! HTTPS on the REST listener (issue #13): beyond loopback the API and the
//! dashboard serve TLS with a certificate the cluster CA issues for the names
//! given; a certificate given as files is served instead, and renewed files are
//! picked up without a restart; plain HTTP beyond loopback only when asked;
//! `ferryctl` verifies against the cluster CA (`--ca-cert`, or the data dir's
//! `ca.pem`) and says so clearly when it cannot.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_tests::pg::TestDb;
use ferry_tests::procs::{ControlPlane, CpOptions};
use ferry_tests::{bin, wait_for};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-test-")
        .tempdir()
        .unwrap()
}

async fn start(dir: &Path, db: &TestDb, listen: &str, args: &[&str]) -> ControlPlane {
    ControlPlane::start(
        dir,
        CpOptions {
            database_url: Some(db.url()),
            http_listen: Some(listen.into()),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    )
    .await
}

/// A client that trusts `ca_pem` and nothing else; `resolve` pins a name to
/// the control plane's address.
fn client(ca_pem: Option<&[u8]>, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(5));
    if let Some(pem) = ca_pem {
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
    }
    for (name, addr) in resolve {
        b = b.resolve(name, *addr);
    }
    b.build().unwrap()
}

async fn health(c: &reqwest::Client, url: &str) -> Result<u16, String> {
    c.get(format!("{url}/api/v1/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// A CA of our own (not the cluster's) and a server certificate it signs.
struct OwnCa {
    pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl OwnCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// (certificate, key) for localhost and 127.0.0.1.
    fn server(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `path` the way a certificate renewal tool does: beside, then
/// renamed over.
fn install(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn ferryctl(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(bin("ferryctl"))
        .args(args)
        .current_dir(cwd)
        .env_remove("FERRY_URL")
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_CA_CERT")
        .env_remove("FERRY_DATA_DIR")
        .output()
        .expect("run ferryctl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn beyond_loopback_the_api_and_dashboard_are_https_with_the_cluster_ca() {
    let dir = tempdir();
    let db = TestDb::new().await;
    let cp = start(
        dir.path(),
        &db,
        "0.0.0.0:0",
        &["--http-san", "ferry.test,10.99.0.1"],
    )
    .await;
    assert!(cp.http.starts_with("https://"), "{}", cp.http);
    let port: u16 = cp.http_addr.rsplit(':').next().unwrap().parse().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ca = std::fs::read(cp.ca_path()).unwrap();

    // Trusting only the cluster CA: every name the certificate carries verifies.
    let trusted = client(Some(&ca), &[("ferry.test", addr)]);
    for url in [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
        format!("https://ferry.test:{port}"),
    ] {
        assert_eq!(health(&trusted, &url).await, Ok(200), "{url}");
    }
    let page = trusted
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("<html"),
        "the dashboard"
    );

    // A name the certificate does not carry, and a client without the cluster CA.
    let elsewhere = client(Some(&ca), &[("elsewhere.test", addr)]);
    let e = health(&elsewhere, &format!("https://elsewhere.test:{port}"))
        .await
        .unwrap_err();
    assert!(e.contains("NotValidForName"), "{e}");
    let e = health(&client(None, &[]), &format!("https://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // Plain HTTP to the TLS port: an answer that says what to do.
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "https_required", "{body}");

    // Requests over TLS reach the API whole: a change, recorded with its peer.
    let api = cp.api();
    assert_eq!(
        api.post("/clusters", &json!({"name": "over-tls"}))
            .await
            .status,
        201
    );
    let trail = api.ok("/audit?route=/api/v1/clusters").await;
    let entry = &trail["items"][0];
    assert_eq!(entry["status"], 201, "{trail}");
    assert!(
        entry["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{entry}"
    );

    // ferryctl: the data dir's ca.pem, --ca-cert, and neither.
    let url = format!("https://127.0.0.1:{port}");
    let data_dir = cp.data_dir.to_str().unwrap();
    let token_file = cp.data_dir.join("admin.token");
    let token_file = token_file.to_str().unwrap();
    let (ok, out) = ferryctl(
        &[
            "--url",
            &url,
            "--data-dir",
            data_dir,
            "--token-file",
            token_file,
            "clusters",
        ],
        dir.path(),
    );
    assert!(ok, "{out}");
    assert!(out.contains("over-tls"), "{out}");
    let ca_file = cp.ca_path();
    let (ok, out) = ferryctl(
        &[
            "--url",
            &url,
            "--ca-cert",
            ca_file.to_str().unwrap(),
            "health",
        ],
        dir.path(),
    );
    assert!(ok, "{out}");
    let other = OwnCa::new("Someone else's CA");
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, &other.pem).unwrap();
    for args in [
        vec![
            "--url",
            &url,
            "--ca-cert",
            other_file.to_str().unwrap(),
            "health",
        ],
        // No CA given and none in ./ferry-data: the system's roots do not know it.
        vec!["--url", &url, "health"],
    ] {
        let (ok, out) = ferryctl(&args, dir.path());
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains("certificate is not trusted") && out.contains("--ca-cert"),
            "{args:?}: {out}"
        );
    }
}

#[tokio::test]
async fn a_certificate_given_as_files_is_served_and_renewed_without_a_restart() {
    let dir = tempdir();
    let db = TestDb::new().await;
    let (first, second) = (OwnCa::new("Corp CA 1"), OwnCa::new("Corp CA 2"));
    let cert_file = dir.path().join("api.crt");
    let key_file = dir.path().join("api.key");
    let (cert, key) = first.server();
    install(&cert_file, &cert);
    install(&key_file, &key);
    let first_file = dir.path().join("corp-ca-1.pem");
    std::fs::write(&first_file, &first.pem).unwrap();
    // On loopback, given files mean TLS.
    let cp = ControlPlane::start(
        dir.path(),
        CpOptions {
            database_url: Some(db.url()),
            http_listen: Some("127.0.0.1:0".into()),
            http_ca: Some(first_file),
            args: vec![
                "--http-cert".into(),
                cert_file.to_str().unwrap().into(),
                "--http-key".into(),
                key_file.to_str().unwrap().into(),
            ],
            ..Default::default()
        },
    )
    .await;
    assert!(cp.http.starts_with("https://"), "{}", cp.http);
    let cluster_ca = std::fs::read(cp.ca_path()).unwrap();
    assert_eq!(
        health(&client(Some(first.pem.as_bytes()), &[]), &cp.http).await,
        Ok(200)
    );
    assert!(health(&client(Some(&cluster_ca), &[]), &cp.http)
        .await
        .is_err());

    // Renewed by another CA: new connections get the new certificate.
    let (cert, key) = second.server();
    install(&key_file, &key);
    install(&cert_file, &cert);
    wait_for("the renewed certificate to be served", T, || {
        let c = client(Some(second.pem.as_bytes()), &[]);
        let url = cp.http.clone();
        async move { (health(&c, &url).await == Ok(200)).then_some(()) }
    })
    .await;
    assert!(health(&client(Some(first.pem.as_bytes()), &[]), &cp.http)
        .await
        .is_err());

    // Half a rotation (a certificate whose key is not there yet): the last good
    // pair stays in use, and the log says why.
    let (cert, _) = first.server();
    install(&cert_file, &cert);
    let log = dir.path().join("cp.log");
    wait_for("the control plane to notice the mismatched pair", T, || {
        let (c, url, log) = (
            client(Some(second.pem.as_bytes()), &[]),
            cp.http.clone(),
            log.clone(),
        );
        async move {
            assert_eq!(health(&c, &url).await, Ok(200));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("keeping the REST certificate in use")
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        health(&client(Some(second.pem.as_bytes()), &[]), &cp.http).await,
        Ok(200)
    );
}

#[tokio::test]
async fn plain_http_beyond_loopback_only_when_asked_and_contradictions_refused() {
    let dir = tempdir();
    let db = TestDb::new().await;

    // Asked explicitly: plain HTTP on every address, with a warning in the log.
    let cp = start(dir.path(), &db, "0.0.0.0:0", &["--http-tls", "off"]).await;
    assert!(cp.http.starts_with("http://"), "{}", cp.http);
    assert_eq!(health(&reqwest::Client::new(), &cp.http).await, Ok(200));
    let log = std::fs::read_to_string(dir.path().join("cp.log")).unwrap();
    assert!(log.contains("plain HTTP beyond loopback"), "{log}");
    drop(cp);

    // `on` serves TLS on loopback too.
    let dir2 = tempdir();
    let cp = start(dir2.path(), &db, "127.0.0.1:0", &["--http-tls", "on"]).await;
    assert!(cp.http.starts_with("https://"), "{}", cp.http);
    let ca = std::fs::read(cp.ca_path()).unwrap();
    assert_eq!(health(&client(Some(&ca), &[]), &cp.http).await, Ok(200));
    drop(cp);

    // Contradictions and unreadable files stop the start-up with a clear reason,
    // before a database or a listener is touched.
    let key = dir.path().join("missing.key");
    let cert = dir.path().join("missing.crt");
    let (bad_cert, _) = OwnCa::new("x").server();
    let mismatched = dir.path().join("mismatched.crt");
    let (_, other_key) = OwnCa::new("y").server();
    let other_key_file = dir.path().join("other.key");
    std::fs::write(&mismatched, bad_cert).unwrap();
    std::fs::write(&other_key_file, other_key).unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    for (args, says) in [
        (
            vec![
                "--http-tls",
                "off",
                "--http-cert",
                &p(&cert),
                "--http-key",
                &p(&key),
            ],
            "--http-tls off",
        ),
        (vec!["--http-cert", &p(&cert)], "--http-key"),
        (
            vec!["--http-cert", &p(&cert), "--http-key", &p(&key)],
            "missing.crt",
        ),
        (
            vec![
                "--http-cert",
                &p(&mismatched),
                "--http-key",
                &p(&other_key_file),
            ],
            "does not belong to the certificate",
        ),
    ] {
        let out = Command::new(bin("ferry-control-plane"))
            .arg("--data-dir")
            .arg(dir.path().join("refused"))
            .arg("--database-url")
            .arg("postgres://nobody@127.0.0.1:1/none")
            .args(&args)
            .env_remove("FERRY_HTTP_TLS")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
