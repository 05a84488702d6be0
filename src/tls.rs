//! TLS setup: PEM files → a rustls `ServerConfig`.
//!
//! rustls 0.23 with the `ring` provider (it builds with only a C compiler, which is all an
//! edge node's build host is guaranteed to have), or aws-lc-rs with the `aws-lc` feature
//! (faster key exchange and signatures, a longer build), TLS 1.2 and 1.3 only, session resumption
//! on (stateless tickets plus an in-memory session cache), and client-certificate
//! authentication when `requestCert` is set. PEM is parsed with rustls-pki-types. Every
//! problem names the file and says what is wrong with it.
//!
//! A listener's certificate and key live in a [`CertStore`] that rustls asks at every
//! handshake, so [`CertStore::reload`] (SIGHUP in the binary) rotates them without a
//! restart: new handshakes get the new pair, established sessions keep theirs, and a bad new
//! file leaves the old pair in place.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
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
pub fn server_config(opts: &ServerOptions, prefix: &str) -> Result<ListenerTls, TlsError> {
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
    let provider = Arc::new(provider());
    let certs = Arc::new(CertStore::open(
        prefix,
        cert_path,
        key_path,
        Arc::clone(&provider),
    )?);
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
    let mut config = builder.with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
    config.ignore_client_order = opts.honor_cipher_order;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    #[cfg(feature = "aws-lc")]
    let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new();
    #[cfg(not(feature = "aws-lc"))]
    let ticketer = rustls::crypto::ring::Ticketer::new();
    config.ticketer = ticketer.map_err(|e| {
        err(
            prefix,
            "cert",
            format!("cannot create the session ticketer: {e}"),
        )
    })?;
    Ok(ListenerTls {
        config: Arc::new(config),
        certs,
    })
}

/// The crypto provider, its cipher suites in the server's order: TLS 1.3's AES-128-GCM with
/// SHA-256 first. Its key schedule (a dozen HMACs per full handshake) runs on SHA-256, which
/// CPUs accelerate, where SHA-384's does not: about a fifth of a full handshake's server
/// time (`benches/providers`). The rest keep the provider's order.
pub(crate) fn provider() -> CryptoProvider {
    #[cfg(feature = "aws-lc")]
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "aws-lc"))]
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: only the preferred suite moves.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

/// What a TLS listener needs: the rustls configuration for its endpoints, and the store its
/// certificate comes from (kept to reload it).
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    pub certs: Arc<CertStore>,
}

/// Reloads the certificates of every TLS listener of one server; cheap to clone and usable
/// from any thread (reading the files happens on the caller's thread, never on the loop).
#[derive(Clone, Debug, Default)]
pub struct TlsReloader {
    stores: Vec<Arc<CertStore>>,
}

impl TlsReloader {
    pub(crate) fn new(stores: Vec<Arc<CertStore>>) -> TlsReloader {
        TlsReloader { stores }
    }

    /// The stores, one per TLS listener (empty when the server has none).
    pub fn stores(&self) -> &[Arc<CertStore>] {
        &self.stores
    }

    /// Reloads every listener's pair; each result says how that listener fared (a failure
    /// leaves that listener's previous pair in place and does not stop the others).
    pub fn reload(&self) -> Vec<(&CertStore, Result<(), TlsError>)> {
        self.stores.iter().map(|s| (&**s, s.reload())).collect()
    }
}

/// One listener's certificate chain and private key, read from PEM files and replaceable
/// while the server runs (see the module header).
pub struct CertStore {
    prefix: String,
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    fn open(
        prefix: &str,
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<CertStore, TlsError> {
        let current = load_pair(prefix, cert_path, key_path, &provider)?;
        Ok(CertStore {
            prefix: prefix.to_string(),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(current),
        })
    }

    /// Reads the certificate and key files again and, when both are good and fit each
    /// other, makes them the pair new handshakes get. On error the previous pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_pair(
            &self.prefix,
            &self.cert_path,
            &self.key_path,
            &self.provider,
        )?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The listener's config prefix, e.g. `servers.socketTls`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The certificate file this store reads.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("prefix", &self.prefix)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Reads a certificate chain and its private key and checks that they belong together.
fn load_pair(
    prefix: &str,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
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
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        err(
            prefix,
            "key",
            format!("{} is not a usable private key: {e}", key_path.display()),
        )
    })?;
    let pair = CertifiedKey::new(certs, signing);
    match pair.keys_match() {
        // ring can always name the public key of a key it loaded; "unknown" is not a mismatch.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(pair))
        }
        Err(e) => Err(err(
            prefix,
            "key",
            format!(
                "{} does not fit the certificate in {}: {e}",
                key_path.display(),
                cert_path.display()
            ),
        )),
    }
}
