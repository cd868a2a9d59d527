//! Mutual TLS 1.3 for peer links: every agent presents its node certificate,
//! signed by the cluster CA, and accepts only peers whose certificate chains
//! to that CA and names the node they claim to be.

use anyhow::{anyhow, Context, Result};
use popcorn_proto::config::ClusterConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// Client and server TLS settings of one node.
pub struct TlsIdentity {
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| {
        format!(
            "cannot read certificate {} (create the cluster's credentials with `popcorn cluster init`)",
            path.display()
        )
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("malformed certificate file {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read private key {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("malformed key file {}", path.display()))?
        .ok_or_else(|| anyhow!("no private key in {}", path.display()))
}

impl TlsIdentity {
    /// Loads the CA and this node's certificate and key from the PKI folder.
    pub fn load(config: &ClusterConfig, node: &str) -> Result<TlsIdentity> {
        // AES-128-GCM first: as safe for this use and cheaper per byte than
        // the default AES-256 (pages stream through these links).
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let provider = Arc::new(provider);
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&config.ca_cert_path())? {
            roots.add(ca).context("cluster CA certificate rejected")?;
        }
        let roots = Arc::new(roots);
        let (cert_path, key_path) = config.node_cert_paths(node);
        let certs = read_certs(&cert_path)?;
        let key = read_key(&key_path)?;

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .context("building the peer certificate verifier")?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .with_context(|| {
                format!("certificate {} does not match its key", cert_path.display())
            })?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .with_context(|| {
                format!("certificate {} does not match its key", cert_path.display())
            })?;
        Ok(TlsIdentity {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }
}

/// The TLS server name under which a node's certificate is issued.
pub fn server_name(node: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(node.to_owned())
        .map_err(|_| anyhow!("node name '{node}' is not a valid TLS name"))
}

/// Checks that a verified client certificate was issued to `node`.
pub fn check_peer_name(cert: &CertificateDer<'_>, node: &str) -> Result<()> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| anyhow!("unreadable peer certificate: {e:?}"))?;
    ee.verify_is_valid_for_subject_name(&server_name(node)?)
        .map_err(|e| {
            anyhow!("peer claims to be '{node}' but its certificate is not issued to it ({e:?})")
        })
}
