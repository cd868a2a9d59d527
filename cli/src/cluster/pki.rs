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
        let cert = params.self_signed(&key).context("signing the CA certificate")?;
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

/// Writes a file readable by its owner only (for keys) or by all.
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

    #[test]
    fn issues_node_certificates_under_a_ca() {
        let ca = Ca::generate("t").unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.key_pem.contains("PRIVATE KEY"));
        let node = ca.issue("a", "10.0.0.1".parse().unwrap()).unwrap();
        assert!(node.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(node.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let other = ca.issue("b", "10.0.0.2".parse().unwrap()).unwrap();
        assert_ne!(node.cert_pem, other.cert_pem);
        assert_ne!(node.key_pem, other.key_pem);
    }
}
