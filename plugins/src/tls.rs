//! `wss://` for the room client: which certificates the elements trust, and what a TLS failure
//! is called.
//!
//! A `wss://` server must present a certificate that chains to the system's trusted roots
//! (rustls-native-certs: `/etc/ssl/certs` on Debian) or to a certificate of the element's
//! `tls-ca-file` (an extra CA, or a server's self-signed certificate itself). There is no
//! fallback to plain `ws://` and no "accept anything" switch.
//!
//! A TLS failure is final, unlike a network error: retrying cannot make an untrusted
//! certificate trusted, so the element fails at once with reason `tls` and a detail that names
//! the host and the cause (`tls: certificate not trusted for HOST (...)`).

use std::path::Path;
use std::sync::{Arc, LazyLock};

use async_tungstenite::tungstenite;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The connector `async-tungstenite` takes for `wss://`.
pub type Connector = tokio_rustls::TlsConnector;

/// The system's trusted roots, read once per process (about 150 files on Debian).
static SYSTEM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let loaded = rustls_native_certs::load_native_certs();
    for err in &loaded.errors {
        gst::warning!(crate::events::CAT, "system certificates: {err}");
    }
    loaded.certs
});

/// The certificates of a PEM file given as `tls-ca-file`; an error names the file and what is
/// wrong with it (missing, unreadable, no certificate in it).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("tls-ca-file {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls-ca-file {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls-ca-file {shown}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// A connector trusting the system's roots plus the certificates of `ca_file`.
pub fn connector(ca_file: Option<&Path>) -> Result<Connector, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(SYSTEM_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("tls-ca-file {}: {e}", path.display()))?;
        }
    }
    // The provider is named rather than taken from the process default: the plugin lives in
    // other people's processes, which may have installed another one or none.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::from(Arc::new(config)))
}

/// The detail of a TLS failure (for reason `tls`), or `None` when `err` is not about TLS.
pub fn failure(err: &tungstenite::Error, host: &str) -> Option<String> {
    let rustls_error = match err {
        tungstenite::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        tungstenite::Error::Tls(tungstenite::error::TlsError::Rustls(e)) => e,
        tungstenite::Error::Tls(other) => return Some(format!("with {host}: {other}")),
        _ => return None,
    };
    Some(match rustls_error {
        rustls::Error::InvalidCertificate(cert) => certificate_failure(cert, host),
        other => format!("handshake with {host} failed: {other} (does it serve wss://?)"),
    })
}

fn certificate_failure(err: &CertificateError, host: &str) -> String {
    match err {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
            "certificate not trusted for {host} (unknown issuer: give its CA, or the server's \
             self-signed certificate, as tls-ca-file)"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("certificate not trusted for {host} (it is not valid for that name)")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("certificate not trusted for {host} (expired)")
        }
        other => format!("certificate not trusted for {host} ({other})"),
    }
}
