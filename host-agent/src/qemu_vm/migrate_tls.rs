//! The TLS identity of each QEMU for migration: the cluster CA and this host's
//! CA-issued certificate laid out as QEMU's `tls-creds-x509` expects them, and the
//! credentials object made from them (QEMU's own TLS channel, `--migration-tls qemu`,
//! and the NBD exports of a storage migration, which QEMU always encrypts itself).

use anyhow::Context;
use serde_json::json;

use super::QemuVms;

/// The QOM id of the TLS credentials object in each QEMU.
pub(super) const TLS_OBJECT: &str = "ferry-tls";

/// The RFC 7919 `ffdhe2048` group (a published constant), as `dh-params.pem`.
/// Without the file QEMU's server-side `tls-creds-x509` generates fresh 2048-bit
/// DH parameters on every `object-add`: 75–550 ms measured here, on the path of
/// every TLS migration (the key exchange itself is ECDHE with TLS 1.3; the file
/// only stops the generation).
const DH_PARAMS_PEM: &str = "\
-----BEGIN DH PARAMETERS-----\n\
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz\n\
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a\n\
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7\n\
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi\n\
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD\n\
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==\n\
-----END DH PARAMETERS-----\n";

/// Puts `data` at `path` so that a reader sees the old file or the new one,
/// never a part: two migrations of this host prepare their TLS objects at the
/// same moment, and a QEMU reading a file another one was truncating failed
/// with "Base64 unexpected header error" (seen in CI). Unchanged files are left
/// alone; changed ones are written beside and renamed over.
fn replace_file(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::write(&tmp, data)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

impl QemuVms {
    /// This host's identity laid out as QEMU's `tls-creds-x509` expects it (the
    /// cluster CA, and the host's CA-issued certificate as both server and client).
    pub(super) fn tls_dir(&self) -> anyhow::Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let state = self.root.parent().context("no state dir")?;
        let dir = state.join("migration-tls");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let cert = std::fs::read(state.join("host.crt")).context("read host.crt")?;
        let key = std::fs::read(state.join("host.key")).context("read host.key")?;
        let ca = std::fs::read(state.join("ca.pem")).context("read ca.pem")?;
        for (name, data) in [
            ("dh-params.pem", &DH_PARAMS_PEM.as_bytes().to_vec()),
            ("ca-cert.pem", &ca),
            ("server-cert.pem", &cert),
            ("client-cert.pem", &cert),
            ("server-key.pem", &key),
            ("client-key.pem", &key),
        ] {
            let mode = if name.ends_with("-key.pem") {
                0o600
            } else {
                0o644
            };
            replace_file(&dir.join(name), data, mode)?;
        }
        Ok(dir)
    }

    /// (Re)creates the VM's TLS credentials object for `endpoint` (server/client).
    pub(super) async fn tls_object(
        &self,
        qmp: &crate::qmp::Qmp,
        endpoint: &str,
    ) -> anyhow::Result<()> {
        let dir = self.tls_dir()?;
        let _ = qmp.execute("object-del", json!({"id": TLS_OBJECT})).await;
        qmp.execute(
            "object-add",
            json!({"qom-type": "tls-creds-x509", "id": TLS_OBJECT, "dir": dir.display().to_string(),
                   "endpoint": endpoint, "verify-peer": true}),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::DH_PARAMS_PEM;

    /// Two migrations prepare the same TLS directory at once (CI saw QEMU read
    /// a half-written DH file): readers see one whole version or the other.
    #[test]
    fn a_file_being_replaced_is_never_seen_in_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dh-params.pem");
        let a = vec![b'a'; 256 * 1024];
        let b = vec![b'b'; 128 * 1024];
        super::replace_file(&path, &a, 0o644).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|data| {
                let (path, stop) = (path.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        super::replace_file(&path, &data, 0o644).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..2000 {
            let seen = std::fs::read(&path).unwrap();
            assert!(seen == a || seen == b, "read {} bytes", seen.len());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    /// The embedded parameters are RFC 7919's `ffdhe2048`: its prime begins (and
    /// ends) with 64 one-bits, the first words after them are the ones the RFC
    /// prints, and the generator is 2 (the DER's last three bytes).
    #[test]
    fn dh_params_are_ffdhe2048() {
        use base64::Engine;
        let b64: String = DH_PARAMS_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        let hex: String = der.iter().map(|b| format!("{b:02X}")).collect();
        assert!(
            hex.contains("00FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1"),
            "{hex}"
        );
        assert!(hex.ends_with("FFFFFFFFFFFFFFFF020102"), "{hex}");
        // SEQUENCE { INTEGER (257 bytes: a 2048-bit prime), INTEGER 2 }
        assert_eq!(der.len(), 4 + 4 + 257 + 3);
    }
}
