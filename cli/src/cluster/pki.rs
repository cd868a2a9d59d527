//! The cluster's credentials: a CA and one certificate per node, used for
//! mutual TLS between agents. Node certificates name the node (SAN DNS) and
//! its IP, and are valid for both server and client authentication.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A CA able to issue node certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A node's certificate and private key (PKCS#8), PEM.
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn generate(cluster: &str) -> Result<Ca> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("popcorn CA {cluster}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .context("signing the CA certificate")?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    pub fn issue(&self, node: &str, ip: IpAddr) -> Result<NodeCert> {
        let key = KeyPair::generate().context("generating a node key")?;
        let mut params = CertificateParams::new(vec![node.to_owned()])
            .with_context(|| format!("node name '{node}' cannot be a certificate name"))?;
        params.subject_alt_names.push(SanType::IpAddress(ip));
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the certificate of '{node}'"))?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Creates a directory (and its parents) for credentials.
pub fn create_private_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
}

/// Writes a file readable by its owner only (for keys) or by all; replaces
/// an existing file (a key never exists with a wider mode, even briefly).
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use std::sync::Arc;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn der(pem: &str) -> CertificateDer<'static> {
        let mut reader = pem.as_bytes();
        let mut certs = rustls_pemfile::certs(&mut reader);
        let cert = certs.next().expect("one certificate").expect("valid PEM");
        assert!(certs.next().is_none());
        cert
    }

    fn common_name(cert: &X509Certificate) -> String {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn ca_and_node_certificates_parse_back() {
        let ca = Ca::generate("t").unwrap();
        let ca_der = der(&ca.cert_pem);
        let (_, parsed) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(common_name(&parsed), "popcorn CA t");
        assert!(parsed.is_ca());
        let bc = parsed.basic_constraints().unwrap().unwrap().value;
        assert_eq!(bc.path_len_constraint, None);
        let ku = parsed.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(matches!(
            rustls_pemfile::private_key(&mut ca.key_pem.as_bytes()),
            Ok(Some(PrivateKeyDer::Pkcs8(_)))
        ));

        let ip: IpAddr = "10.77.0.11".parse().unwrap();
        let node = ca.issue("a", ip).unwrap();
        let node_der = der(&node.cert_pem);
        let (_, parsed) = X509Certificate::from_der(&node_der).unwrap();
        assert_eq!(common_name(&parsed), "a");
        assert!(!parsed.is_ca());
        assert_eq!(
            parsed.issuer(),
            X509Certificate::from_der(&ca_der).unwrap().1.subject()
        );
        let san = &parsed.subject_alternative_name().unwrap().unwrap().value;
        assert!(san.general_names.contains(&GeneralName::DNSName("a")));
        assert!(san
            .general_names
            .contains(&GeneralName::IPAddress(&[10, 77, 0, 11])));
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(node.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = match rustls_pemfile::private_key(&mut node.key_pem.as_bytes()) {
            Ok(Some(k @ PrivateKeyDer::Pkcs8(_))) => k,
            other => panic!("expected a PKCS#8 key, got {other:?}"),
        };

        // What the agents do with them: mutual TLS where each side checks the
        // other's certificate against the cluster CA and the node's name.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.clone()).unwrap();
        let roots = Arc::new(roots);
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let now = UnixTime::now();
        let name = |n: &str| ServerName::try_from(n.to_owned()).unwrap();
        server
            .verify_server_cert(&node_der, &[], &name("a"), &[], now)
            .expect("valid server certificate for a");
        server
            .verify_server_cert(&node_der, &[], &name("10.77.0.11"), &[], now)
            .expect("valid server certificate for its IP");
        assert!(server
            .verify_server_cert(&node_der, &[], &name("b"), &[], now)
            .is_err());
        let client =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .unwrap();
        client
            .verify_client_cert(&node_der, &[], now)
            .expect("valid client certificate");
        // The key belongs to the certificate.
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![node_der], key)
            .expect("key matches certificate");

        // A certificate from another CA is refused.
        let rogue = Ca::generate("t").unwrap().issue("a", ip).unwrap();
        assert!(server
            .verify_server_cert(&der(&rogue.cert_pem), &[], &name("a"), &[], now)
            .is_err());
        assert!(client
            .verify_client_cert(&der(&rogue.cert_pem), &[], now)
            .is_err());
    }
}
