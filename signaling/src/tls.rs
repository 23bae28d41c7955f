//! TLS for the server: which certificate it serves, a self-signed certificate it keeps in a
//! folder and reuses, and the fingerprints people need to trust such a certificate.
//!
//! Browsers give camera and microphone only to secure pages (https, or localhost), so a
//! conference across machines needs TLS. A LAN without a certificate authority gets a
//! self-signed certificate: [`self_signed`] generates it once (ECDSA P-256, rcgen) and then
//! reuses it, so that a browser's "proceed anyway" and a peer's `tls-ca-file` stay valid across
//! restarts. When the names it must cover change (a new address), it is reissued with the same
//! key: the SPKI hash (Chromium's `--ignore-certificate-errors-spki-list`) stays the same.
//!
//! Serving itself is `axum-server`'s rustls acceptor (see `server.rs`); the files are read
//! again on SIGHUP.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// A certificate (PEM, chain allowed: the server's first) and its private key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What can go wrong while preparing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a usable certificate: {why}")]
    BadCertificate { path: PathBuf, why: String },
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// How [`self_signed`] came by its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Generated now, with a new key.
    Generated,
    /// The one already in the folder, unchanged.
    Reused,
    /// The folder's key, with a new certificate for names the old one did not cover.
    Reissued,
}

/// Identifies a certificate for people and browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprints {
    /// SHA-256 of the certificate, `AB:CD:…` (what browsers show as the certificate's
    /// fingerprint and `openssl x509 -fingerprint -sha256` prints).
    pub sha256: String,
    /// Base64 SHA-256 of the SubjectPublicKeyInfo: Chromium's
    /// `--ignore-certificate-errors-spki-list` value (and HPKP's pin-sha256).
    pub spki_sha256: String,
}

/// The default folder of the self-signed certificate: `$XDG_STATE_HOME/gst-room/tls`, else
/// `~/.local/state/gst-room/tls`.
pub fn default_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
            PathBuf::from(home).join(".local/state")
        });
    state.join("gst-room").join("tls")
}

/// The certificate `cert.pem`/`key.pem` in `dir`, made to cover `names` (DNS names or IP
/// addresses): reused when it does, reissued with its key when it does not, generated when the
/// folder has none. The folder is created (mode 0700; the key file 0600).
pub fn self_signed(dir: &Path, names: &[String]) -> Result<(TlsFiles, Origin), TlsError> {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    let existing_key = if files.key.exists() {
        Some(fs::read_to_string(&files.key).map_err(io(&files.key))?)
    } else {
        None
    };
    if let Some(key) = &existing_key
        && files.cert.exists()
    {
        let der = first_certificate(&files.cert)?;
        // A certificate of another key (someone replaced key.pem) is not reused.
        let same_key = rcgen::KeyPair::from_pem(key)
            .map(|k| spki_of(&der).ok() == Some(rcgen::PublicKeyData::subject_public_key_info(&k)))
            .unwrap_or(false);
        if same_key && names.iter().all(|name| covers(&der, name)) {
            return Ok((files, Origin::Reused));
        }
    }
    let (key, origin) = match existing_key.as_deref().map(rcgen::KeyPair::from_pem) {
        Some(Ok(key)) => (key, Origin::Reissued),
        _ => (rcgen::KeyPair::generate()?, Origin::Generated),
    };
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gst-room self-signed");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;

    fs::create_dir_all(dir).map_err(io(dir))?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if origin == Origin::Generated {
        write_file(&files.key, key.serialize_pem().as_bytes(), 0o600).map_err(io(&files.key))?;
    }
    write_file(&files.cert, cert.pem().as_bytes(), 0o644).map_err(io(&files.cert))?;
    Ok((files, origin))
}

/// Writes `data` to `path` through a temporary file and a rename, so that a server reading the
/// file (SIGHUP) never sees half of it.
fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// The first certificate of a PEM file (the server's own in a chain).
pub fn first_certificate(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })?;
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| TlsError::NoCertificate {
            path: path.to_owned(),
        })?
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            why: e.to_string(),
        })
}

/// The fingerprints of the first certificate in `path`.
pub fn fingerprints(path: &Path) -> Result<Fingerprints, TlsError> {
    let der = first_certificate(path)?;
    let spki = spki_of(&der).map_err(|why| TlsError::BadCertificate {
        path: path.to_owned(),
        why,
    })?;
    let cert_sha256 = sha256(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let spki_sha256 = base64::engine::general_purpose::STANDARD.encode(sha256(&spki));
    Ok(Fingerprints {
        sha256: cert_sha256,
        spki_sha256,
    })
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// The DER SubjectPublicKeyInfo of a certificate.
fn spki_of(der: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let cert = webpki::EndEntityCert::try_from(der).map_err(|e| format!("{e:?}"))?;
    Ok(cert.subject_public_key_info().as_ref().to_vec())
}

/// Whether the certificate is valid for `name` (a DNS name or an IP address).
fn covers(der: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gst-room-tls-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn self_signed_is_generated_once_reused_and_reissued_with_the_same_key_for_new_names() {
        let dir = temp_dir("reuse");
        let names = vec!["localhost".to_owned(), "10.1.2.3".to_owned()];
        let (files, origin) = self_signed(&dir, &names).unwrap();
        assert_eq!(origin, Origin::Generated);
        let first = fingerprints(&files.cert).unwrap();
        let der = first_certificate(&files.cert).unwrap();
        assert!(covers(&der, "localhost") && covers(&der, "10.1.2.3"));
        assert!(!covers(&der, "10.9.9.9"));
        let key_mode = fs::metadata(&files.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode, 0o600);

        let (_, origin) = self_signed(&dir, &names[..1]).unwrap();
        assert_eq!(origin, Origin::Reused);
        assert_eq!(fingerprints(&files.cert).unwrap(), first);

        let more = vec!["localhost".to_owned(), "10.9.9.9".to_owned()];
        let (_, origin) = self_signed(&dir, &more).unwrap();
        assert_eq!(origin, Origin::Reissued);
        let reissued = fingerprints(&files.cert).unwrap();
        assert_ne!(reissued.sha256, first.sha256);
        assert_eq!(
            reissued.spki_sha256, first.spki_sha256,
            "same key, same SPKI pin"
        );
        assert!(covers(&first_certificate(&files.cert).unwrap(), "10.9.9.9"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_have_the_usual_forms() {
        let dir = temp_dir("fp");
        let (files, _) = self_signed(&dir, &["localhost".to_owned()]).unwrap();
        let fp = fingerprints(&files.cert).unwrap();
        assert_eq!(fp.sha256.len(), 32 * 3 - 1, "{}", fp.sha256);
        assert_eq!(fp.spki_sha256.len(), 44, "{}", fp.spki_sha256);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_without_a_certificate_is_a_clear_error() {
        let dir = temp_dir("bad");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cert.pem");
        fs::write(&path, "not a certificate\n").unwrap();
        let err = fingerprints(&path).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
