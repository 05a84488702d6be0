//! TLS setup: PEM files → a rustls `ServerConfig`.
//!
//! rustls 0.23 with the `ring` provider (it builds with only a C compiler, which is all an
//! edge node's build host is guaranteed to have), TLS 1.2 and 1.3 only, session resumption
//! on (stateless tickets plus an in-memory session cache), and client-certificate
//! authentication when `requestCert` is set. PEM is parsed with rustls-pki-types. Every
//! problem names the file and says what is wrong with it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use actionwire_config::ServerOptions;

/// Sessions remembered for resumption by id (TLS 1.2); TLS 1.3 uses stateless tickets.
const SESSION_CACHE: usize = 4096;

/// A TLS configuration problem: which key or file, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// Config key the problem belongs to, e.g. `servers.socket.serverOptions.cert`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for TlsError {}

fn err(prefix: &str, field: &str, message: String) -> TlsError {
    TlsError {
        key: format!("{prefix}.serverOptions.{field}"),
        message,
    }
}

fn describe(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}

fn load_certs(
    path: &Path,
    prefix: &str,
    field: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            err(
                prefix,
                field,
                format!("cannot read {}: {}", path.display(), describe(&e)),
            )
        })?
        .collect();
    let certs = certs.map_err(|e| {
        err(
            prefix,
            field,
            format!("cannot read {}: {}", path.display(), describe(&e)),
        )
    })?;
    if certs.is_empty() {
        return Err(err(
            prefix,
            field,
            format!(
                "{} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// Builds the server configuration for a listener whose options live under `prefix`
/// (e.g. `servers.socket`).
pub fn server_config(opts: &ServerOptions, prefix: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = opts.cert.as_deref().ok_or_else(|| {
        err(
            prefix,
            "cert",
            "required for TLS (a PEM certificate chain file)".into(),
        )
    })?;
    let key_path = opts.key.as_deref().ok_or_else(|| {
        err(
            prefix,
            "key",
            "required for TLS (a PEM private key file)".into(),
        )
    })?;
    let certs = load_certs(cert_path, prefix, "cert")?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        let what = match e {
            pem::Error::NoItemsFound => {
                "holds no private key (expected PKCS#8, SEC1 or RSA PEM)".to_string()
            }
            other => format!("cannot be read: {}", describe(&other)),
        };
        err(prefix, "key", format!("{} {what}", key_path.display()))
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err(prefix, "cert", format!("TLS setup failed: {e}")))?;
    let builder = if opts.request_cert {
        let ca_path = opts.ca.as_deref().ok_or_else(|| {
            err(
                prefix,
                "ca",
                "required when requestCert is true (the PEM CA that signs client certificates)"
                    .into(),
            )
        })?;
        let mut roots = RootCertStore::empty();
        for ca in load_certs(ca_path, prefix, "ca")? {
            roots.add(ca).map_err(|e| {
                err(
                    prefix,
                    "ca",
                    format!("{}: unusable CA certificate: {e}", ca_path.display()),
                )
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| err(prefix, "ca", format!("{}: {e}", ca_path.display())))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        err(
            prefix,
            "key",
            format!(
                "{} does not fit the certificate in {}: {e}",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| {
        err(
            prefix,
            "cert",
            format!("cannot create the session ticketer: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}
