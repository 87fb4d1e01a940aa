//! TLS for `https` targets (rustls, ring provider). A target trusts either the system's CA
//! store or only the CA bundle its section names (`ca_bundle = "certs/internal-ca.pem"`), so an
//! internal service with a private CA is reachable without trusting that CA for every target.
//! The server is verified against the URL's host (a DNS name or an IP literal, as webpki
//! checks it); connections speak HTTP/1.1, as the pool does.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use wasmtime_wasi_http::Error as HttpError;

/// How one target's connections are secured.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl Tls {
    /// For a target at `host` (as written in its URL, an IPv6 literal without brackets),
    /// trusting `ca_bundle` when given, else the system's store.
    pub fn new(host: &str, ca_bundle: Option<&Path>) -> Result<Tls, String> {
        let roots = match ca_bundle {
            Some(path) => Arc::new(load_bundle(path)?),
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))?;
        Ok(Tls { connector: TlsConnector::from(Arc::new(config)), server_name })
    }

    /// The handshake over a connected stream; its failures become `wasi:http`'s TLS error codes.
    pub async fn connect(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, HttpError> {
        self.connector.connect(self.server_name.clone(), stream).await.map_err(handshake_error)
    }
}

/// A PEM file of one or more CA certificates, each checked as a trust anchor.
pub fn load_bundle(path: &Path) -> Result<RootCertStore, String> {
    let text = std::fs::read(path).map_err(|e| format!("ca_bundle {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&text) {
        let certificate =
            certificate.map_err(|e| format!("ca_bundle {}: not PEM certificates: {e}", path.display()))?;
        roots
            .add(certificate)
            .map_err(|e| format!("ca_bundle {}: a certificate is not a usable CA: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("ca_bundle {}: holds no certificate", path.display()));
    }
    Ok(roots)
}

/// The system's CA store, read once per process (it is tens of files).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _unusable) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map_or("none found".to_string(), ToString::to_string);
                return Err(format!("no system CA certificates ({why}); name the target's `ca_bundle`"));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

fn handshake_error(error: std::io::Error) -> HttpError {
    let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return HttpError::Tls(error);
    };
    tracing::debug!(%tls, "outbound TLS handshake failed");
    match tls {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => HttpError::TlsCertificateError,
        rustls::Error::AlertReceived(alert) => {
            HttpError::TlsAlertReceived { alert_id: Some(u8::from(*alert)), alert_message: Some(format!("{alert:?}")) }
        }
        _ => HttpError::TlsProtocolError,
    }
}
